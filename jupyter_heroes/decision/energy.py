"""Energy of a run: a per-node power model, refined by measurements when there are some.

Every figure carries its basis: ``measured`` when it comes from a meter (EAR's DC node power, Slurm's
``ConsumedEnergy``), ``estimated`` when it comes from a model. In a decision (a run that has not
happened yet) the runtime is always a prediction; there ``measured`` means that the *power* per node
is the one EAR (or Slurm) measured on earlier runs of the same application on that cluster
(:class:`MeasuredPower`), ``estimated`` that it comes from the cluster's :class:`PowerModel`.

Power model (per node, set in the cluster's ``site.power``), either:

- ``idle_w``/``max_w`` (and ``cores``, the node's core count): a node draws
  ``idle + (max - idle) x utilisation``; a job using ``c`` of the node's ``cores`` is charged the
  share ``c / cores`` of it (the node's other cores serve other jobs);
- ``tdp_per_core_w``: ``cores used x tdp_per_core_w x utilisation + memory GB x mem_w_per_gb``
  (the Green Algorithms model, Lannelongue et al., Advanced Science 2021, whose memory figure,
  0.3725 W/GB, is the default here);

plus ``gpu_w`` per GPU at ``gpu_utilisation``. With no model declared, :meth:`PowerModel.generic`
assumes 10 W per core and says so in every figure's source. Energy is the IT energy of the nodes; the
site's PUE is applied when computing carbon (:mod:`.carbon`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MEASURED = "measured"
ESTIMATED = "estimated"
MEM_W_PER_GB = 0.3725
GENERIC_TDP_PER_CORE_W = 10.0
J_PER_KWH = 3.6e6


class EnergyError(ValueError):
    """A power model or an energy reading is invalid; the message names the field or the value."""

    reason = "invalid-energy"


@dataclass(frozen=True)
class Energy:
    """An amount of energy with its basis (``measured`` or ``estimated``) and where it came from."""

    joules: float
    basis: str
    source: str

    @property
    def kwh(self) -> float:
        return self.joules / J_PER_KWH


def _num(d: Mapping[str, Any], key: str, where: str, lo: float = 0.0, hi: float = math.inf) -> float | None:
    v = d.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi or v != v:
        raise EnergyError(f"{where}.{key}: expected a number between {lo:g} and {hi:g}, got {v!r}")
    return float(v)


@dataclass(frozen=True)
class PowerModel:
    """Power draw of one node of a cluster (see the module docstring for the two forms)."""

    idle_w: float | None = None
    max_w: float | None = None
    cores: int | None = None
    tdp_per_core_w: float | None = None
    mem_w_per_gb: float = MEM_W_PER_GB
    gpu_w: float = 0.0
    utilisation: float = 1.0
    gpu_utilisation: float = 1.0
    source: str = "site power model"

    KEYS = frozenset(
        {
            "idle_w",
            "max_w",
            "cores",
            "tdp_per_core_w",
            "mem_w_per_gb",
            "gpu_w",
            "utilisation",
            "gpu_utilisation",
            "source",
        }
    )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "site.power") -> PowerModel:
        if not isinstance(d, Mapping):
            raise EnergyError(f"{where}: expected a mapping such as {{idle_w: 90, max_w: 350, cores: 64}}")
        extra = sorted(set(d) - cls.KEYS)
        if extra:
            raise EnergyError(f"{where}: unknown field(s) {extra}; known: {sorted(cls.KEYS)}")
        idle, mx = _num(d, "idle_w", where), _num(d, "max_w", where)
        tdp = _num(d, "tdp_per_core_w", where)
        if (idle is None) != (mx is None):
            raise EnergyError(f"{where}: give both idle_w and max_w, or tdp_per_core_w")
        if idle is None and tdp is None:
            raise EnergyError(f"{where}: give idle_w and max_w (W per node), or tdp_per_core_w")
        if idle is not None and mx is not None and mx < idle:
            raise EnergyError(f"{where}: max_w {mx:g} is below idle_w {idle:g}")
        cores = _num(d, "cores", where, 1)
        mem = _num(d, "mem_w_per_gb", where)
        util = _num(d, "utilisation", where, 0, 1)
        gutil = _num(d, "gpu_utilisation", where, 0, 1)
        return cls(
            idle_w=idle,
            max_w=mx,
            cores=int(cores) if cores is not None else None,
            tdp_per_core_w=tdp,
            mem_w_per_gb=MEM_W_PER_GB if mem is None else mem,
            gpu_w=_num(d, "gpu_w", where) or 0.0,
            utilisation=1.0 if util is None else util,
            gpu_utilisation=1.0 if gutil is None else gutil,
            source=str(d.get("source", "site power model")),
        )

    @classmethod
    def generic(cls) -> PowerModel:
        return cls(
            tdp_per_core_w=GENERIC_TDP_PER_CORE_W,
            source=f"generic {GENERIC_TDP_PER_CORE_W:g} W/core (the cluster declares no power model)",
        )

    def node_power_w(self, cores_used: float, mem_gb: float = 0.0, gpus_used: float = 0.0) -> float:
        """Mean power (W) charged to a job on one node using *cores_used* cores, *mem_gb* GB of memory
        and *gpus_used* GPUs."""
        if self.idle_w is not None and self.max_w is not None:
            share = min(1.0, cores_used / self.cores) if self.cores else 1.0
            p = (self.idle_w + (self.max_w - self.idle_w) * self.utilisation) * share
        else:
            p = cores_used * (self.tdp_per_core_w or 0.0) * self.utilisation + mem_gb * self.mem_w_per_gb
        return p + gpus_used * self.gpu_w * self.gpu_utilisation

    def describe(self) -> str:
        if self.idle_w is not None:
            s = f"{self.source}: {self.idle_w:g}-{self.max_w:g} W/node"
        else:
            s = f"{self.source}: {self.tdp_per_core_w:g} W/core"
        if self.gpu_w:
            s += f" + {self.gpu_w:g} W/GPU"
        return s


@dataclass(frozen=True)
class MeasuredPower:
    """Mean DC power of one node measured over earlier runs of an application on a cluster."""

    node_power_w: float
    runs: int
    source: str

    def describe(self) -> str:
        return f"{self.source}: {self.node_power_w:.0f} W/node over {self.runs} run(s)"


SUFFIX = {"": 1.0, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15}
ENERGY_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)\s*$")


def parse_consumed_energy(text: str) -> float | None:
    """Joules from a ``sacct`` ``ConsumedEnergy`` (``1.50K``, ``12M``) or ``ConsumedEnergyRaw`` value.

    Empty (what ``sacct`` prints on job lines when no energy plugin is configured) gives ``None``;
    anything else that is not a number with an optional K/M/G/T/P suffix raises :class:`EnergyError`.
    """
    if text is None or not str(text).strip():
        return None
    m = ENERGY_RE.match(str(text))
    if not m:
        raise EnergyError(f"ConsumedEnergy {text!r}: expected joules such as 5230, 1.50K or 12M")
    return float(m.group(1)) * SUFFIX[m.group(2)]


def from_consumed_energy(text: str) -> Energy | None:
    """A measured :class:`Energy` from Slurm's ``ConsumedEnergy`` (``None`` when not recorded)."""
    j = parse_consumed_energy(text)
    return None if j is None else Energy(j, MEASURED, "Slurm ConsumedEnergy")


def measured_power_from_slurm(consumed_energy: str, elapsed_s: float, nodes: int) -> MeasuredPower | None:
    """Mean node power of one finished job from its ``ConsumedEnergy``, elapsed seconds and node count."""
    j = parse_consumed_energy(consumed_energy)
    if j is None or elapsed_s <= 0 or nodes <= 0:
        return None
    return MeasuredPower(j / elapsed_s / nodes, 1, "Slurm ConsumedEnergy")
