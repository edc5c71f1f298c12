"""JobSpec validation: what may reach a batch script, and the messages for what may not."""

import pytest

from jupyter_heroes.clusters.spec import JobSpec, JobSpecError, parse_array, validate_job_id


def spec(**kw):
    base = {"name": "step-1", "command": ["true"]}
    base.update(kw)
    return JobSpec(**base)


def test_minimal_spec_is_valid_and_copied():
    s = spec(env={"A": "1"}, afterok=["12"])
    v = s.validated()
    assert v == s
    v.env["B"] = "2"
    v.afterok.append("13")
    assert s.env == {"A": "1"} and s.afterok == ["12"]


@pytest.mark.parametrize(
    "name",
    ["", "-x", "a b", "a;b", "$(id)", "`id`", "a/b", "../x", "x\ny", "é", "a" * 129, 42],
)
def test_hostile_job_names_are_refused(name):
    with pytest.raises(JobSpecError, match=r"^name: .* is not a job name"):
        spec(name=name).validated()


def test_command_must_be_an_argv_list():
    with pytest.raises(JobSpecError, match="command: must be a non-empty list of arguments"):
        spec(command="echo hi; rm -rf ~").validated()
    with pytest.raises(JobSpecError, match="command: must be a non-empty list"):
        spec(command=[]).validated()
    with pytest.raises(JobSpecError, match=r"command\[1\]: must not contain NUL"):
        spec(command=["echo", "a\x00b"]).validated()


def test_command_arguments_may_hold_anything_printable_including_newlines():
    hostile = ["$(touch /tmp/x)", "`id`", "a;b", "it's", 'say "hi"', "x\ny", "../../etc/passwd", "*", "~"]
    assert spec(command=["printf", *hostile]).validated().command[1:] == hostile


@pytest.mark.parametrize("name", ["lower", "1ABC", "A-B", "A B", "A;B=1", "", "PATH$(x)"])
def test_env_names_are_validated(name):
    with pytest.raises(JobSpecError, match=r"variable name .* must match \^\[A-Z_\]\[A-Z0-9_\]\*\$"):
        spec(env={name: "x"}).validated()


def test_env_values_are_free_text():
    v = spec(env={"HEROES_X": "$(rm -rf /)\n#SBATCH --partition=evil", "_Y2": ""}).validated()
    assert v.env["HEROES_X"].startswith("$(rm")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("nodes", 0, "between 1 and"),
        ("nodes", True, "must be an integer, got bool"),
        ("ntasks", "4", "must be an integer, got str"),
        ("cpus_per_task", -1, "between 1 and"),
        ("mem_mb", 0, "between 1 and"),
        ("gpus", 2.0, "must be an integer, got float"),
        ("walltime_s", 10**9, "between 1 and"),
    ],
)
def test_numbers_are_numbers_in_range(field, value, message):
    with pytest.raises(JobSpecError, match=f"^{field}: .*{message}"):
        spec(**{field: value}).validated()


@pytest.mark.parametrize("field", ["partition", "account", "qos"])
@pytest.mark.parametrize("value", ["debug\n#SBATCH --x", "a b", "$(id)", "-p", "x;y", "a" * 64])
def test_directive_names_are_strict(field, value):
    with pytest.raises(JobSpecError, match=f"^{field}: .* is not a valid {field} name"):
        spec(**{field: value}).validated()


@pytest.mark.parametrize("field", ["workdir", "stdout", "stderr"])
def test_paths_refuse_dotdot_and_control_characters(field):
    with pytest.raises(JobSpecError, match=f"^{field}: .* must not contain '..' components"):
        spec(**{field: "/scratch/a/../../etc"}).validated()
    with pytest.raises(JobSpecError, match=f"^{field}: must not contain control characters"):
        spec(**{field: "/scratch/a\nb"}).validated()
    assert getattr(spec(**{field: "/scratch/a..b/c%j.out"}).validated(), field) == "/scratch/a..b/c%j.out"


def test_comment_is_one_line():
    with pytest.raises(JobSpecError, match="^comment: must not contain control characters"):
        spec(comment="a\nb").validated()
    assert spec(comment="$(touch /tmp/x) `id` ; 'q'").validated().comment == "$(touch /tmp/x) `id` ; 'q'"


def test_dependencies_are_job_ids():
    with pytest.raises(JobSpecError, match="job_id: '12;rm' is not a job id"):
        spec(afterok=["12;rm"]).validated()
    with pytest.raises(JobSpecError, match="afterok: must be a list of job ids"):
        spec(afterok="12").validated()
    assert validate_job_id("123_4") == "123_4"


def test_container_image_cannot_be_an_option():
    with pytest.raises(JobSpecError, match="container_image: must not start with '-'"):
        spec(container_image="--bind=/:/host").validated()


@pytest.mark.parametrize(
    ("text", "tasks", "limit"),
    [
        ("0-3", [0, 1, 2, 3], None),
        ("1,5,7", [1, 5, 7], None),
        ("0-10:5", [0, 5, 10], None),
        ("0-9%2", list(range(10)), 2),
    ],
)
def test_array_specs(text, tasks, limit):
    assert parse_array(text) == (tasks, limit)
    assert spec(array=text).validated().array == text


@pytest.mark.parametrize("text", ["", "a", "1-", "3-1", "0-3;id", "0-3\n#SBATCH", "-1"])
def test_bad_array_specs(text):
    with pytest.raises(JobSpecError, match="^array: "):
        parse_array(text)


def test_from_dict_refuses_unknown_fields():
    with pytest.raises(JobSpecError, match="^sbatch_extra: unknown job field"):
        JobSpec.from_dict({"name": "a", "command": ["true"], "sbatch_extra": "--wrap=id"})
    assert JobSpec.from_dict(spec(nodes=2).to_dict()).nodes == 2
