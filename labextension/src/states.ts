/**
 * Workflow instance states as the sidebar shows them, and the merging of progress events into the
 * list the sidebar holds. Pure functions: no DOM, no JupyterLab.
 *
 * The states are those of the workflow engine (`jupyter_heroes/workflows/engine.py:
 * instance_state`) and of jobs (`jupyter_heroes/clusters/scheduler.py: JobState`).
 */
import { IJob, IWorkflowEvent, IWorkflowInstance } from './api';

/** How a state looks: pending (waiting), running, success, failure, cancelled, unknown. */
export type StateKind = 'pending' | 'running' | 'success' | 'failure' | 'cancelled' | 'unknown';

export interface IStateInfo {
  /** what the user reads */
  label: string;
  kind: StateKind;
  /** a final state never changes again */
  final: boolean;
  /** a tooltip that says what the state means */
  help: string;
}

const S = (kind: StateKind, final: boolean, label: string, help: string): IStateInfo => ({
  kind,
  final,
  label,
  help
});

/** Every instance and job state of the engine. */
export const STATES: Readonly<Record<string, IStateInfo>> = {
  new: S('pending', false, 'new', 'Recorded; not yet handed to a cluster'),
  submitting: S('pending', false, 'submitting', 'Being handed to the cluster scheduler'),
  queued: S('pending', false, 'queued', 'Waiting in the cluster queue'),
  held: S('pending', false, 'held', 'Held by the scheduler or by the budget policy'),
  running: S('running', false, 'running', 'Running on the cluster'),
  completing: S('running', false, 'completing', 'Finishing on the cluster'),
  failing: S('failure', false, 'failing', 'A step failed; the remaining steps are being cancelled'),
  completed: S('success', true, 'completed', 'Every step completed successfully'),
  failed: S('failure', true, 'failed', 'A step failed'),
  cancelled: S('cancelled', true, 'cancelled', 'Cancelled'),
  timeout: S('failure', true, 'timed out', 'A step ran out of its walltime'),
  node_fail: S('failure', true, 'node failure', 'A compute node failed'),
  out_of_memory: S('failure', true, 'out of memory', 'A step ran out of memory'),
  unknown: S(
    'unknown',
    false,
    'unknown',
    'The cluster does not answer right now; the state is checked again'
  )
};

/** What *state* looks like; an unrecognised state is shown as it is, kind unknown. */
export function describeState(state: string | undefined | null): IStateInfo {
  const key = (state ?? '').toLowerCase();
  return STATES[key] ?? S('unknown', false, key || 'unknown', `State '${key}'`);
}

export function isFinal(state: string | undefined | null): boolean {
  return describeState(state).final;
}

/** One line of the sidebar. */
export interface IInstanceRow {
  id: string;
  /** the template (name and version) the instance runs, else its id */
  title: string;
  /** project, cluster, steps */
  detail: string;
  state: IStateInfo;
  /** when it last changed, as the service said (ISO 8601) */
  updated: string;
  /** step name -> state, for the steps the answer lists */
  steps: { name: string; state: IStateInfo }[];
}

export function templateName(inst: IWorkflowInstance): string {
  const t = inst.template;
  if (t && typeof t === 'object') {
    const name = t.name ?? '';
    return t.version !== undefined && name ? `${name} v${t.version}` : name;
  }
  const name = (typeof t === 'string' ? t : '') || inst.template_name || inst.name || '';
  const version = inst.template_version;
  return version !== undefined && name ? `${name} v${version}` : name;
}

/** The sidebar's view of one instance. */
export function instanceRow(inst: IWorkflowInstance): IInstanceRow {
  const jobs: IJob[] = Array.isArray(inst.jobs) ? inst.jobs : [];
  const steps = jobs
    .filter(j => j && j.step)
    .map(j => ({ name: String(j.step), state: describeState(j.state) }));
  const detail = [
    inst.project ? `project ${inst.project}` : '',
    inst.cluster ? `on ${inst.cluster}` : '',
    steps.length ? `${steps.length} step${steps.length === 1 ? '' : 's'}` : ''
  ]
    .filter(Boolean)
    .join(' · ');
  return {
    id: String(inst.id),
    title: templateName(inst) || `workflow ${inst.id}`,
    detail,
    state: describeState(inst.state),
    updated: inst.updated ?? inst.created ?? '',
    steps
  };
}

/** Live instances first, then the most recently changed first (ISO timestamps sort as text). */
export function sortRows(rows: IInstanceRow[]): IInstanceRow[] {
  return [...rows].sort((a, b) => {
    if (a.state.final !== b.state.final) {
      return a.state.final ? 1 : -1;
    }
    if (a.updated !== b.updated) {
      return a.updated < b.updated ? 1 : -1;
    }
    return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
  });
}

/** Counts for the sidebar's summary line. */
export function summarize(rows: IInstanceRow[]): { live: number; finished: number; failed: number } {
  let live = 0;
  let finished = 0;
  let failed = 0;
  for (const row of rows) {
    if (row.state.final) {
      finished++;
      if (row.state.kind === 'failure') {
        failed++;
      }
    } else {
      live++;
    }
  }
  return { live, finished, failed };
}

/** What applying an event did: whether the list changed, and whether it must be fetched again. */
export interface IApplied {
  changed: boolean;
  refetch: boolean;
}

/**
 * Merge *event* into *instances* (changed in place). An event about an instance the list does not
 * hold (submitted elsewhere), or an `overflow` (events were lost), asks for a fetch of the list.
 */
export function applyEvent(instances: IWorkflowInstance[], event: IWorkflowEvent): IApplied {
  if (event.type === 'overflow') {
    return { changed: false, refetch: true };
  }
  if (event.type === 'snapshot') {
    return applySnapshot(instances, event);
  }
  if (!event.instance || (event.type !== 'instance' && event.type !== 'job')) {
    return { changed: false, refetch: false };
  }
  const inst = instances.find(i => String(i.id) === String(event.instance));
  if (!inst) {
    return { changed: false, refetch: true };
  }
  const stamp = eventTime(event);
  if (event.type === 'instance') {
    if (!event.state || inst.state === event.state) {
      return { changed: false, refetch: false };
    }
    inst.state = event.state;
    if (stamp) {
      inst.updated = stamp;
    }
    return { changed: true, refetch: false };
  }
  // a job event: update the step if the list carries steps
  if (!Array.isArray(inst.jobs) || !event.step) {
    return { changed: false, refetch: false };
  }
  const job = inst.jobs.find(j => j.step === event.step);
  if (!job) {
    return { changed: false, refetch: true };
  }
  if (job.state === event.state && (event.reason ?? '') === (job.reason ?? '')) {
    return { changed: false, refetch: false };
  }
  job.state = event.state;
  if (event.reason !== undefined) {
    job.reason = event.reason;
  }
  return { changed: true, refetch: false };
}

/**
 * A `snapshot` event (sent when a stream opens, one per live instance) carries the whole instance
 * in `data`: it replaces or adds the instance. Without `data` it asks for a fetch.
 */
function applySnapshot(instances: IWorkflowInstance[], event: IWorkflowEvent): IApplied {
  const data = event.data as IWorkflowInstance | undefined;
  if (!data || typeof data !== 'object' || data.id === undefined) {
    return { changed: false, refetch: !!event.instance };
  }
  const index = instances.findIndex(i => String(i.id) === String(data.id));
  if (index < 0) {
    instances.push({ ...data });
    return { changed: true, refetch: false };
  }
  if (JSON.stringify(instances[index]) === JSON.stringify(data)) {
    return { changed: false, refetch: false };
  }
  instances[index] = { ...data };
  return { changed: true, refetch: false };
}

function eventTime(event: IWorkflowEvent): string {
  const ts = event.ts;
  if (typeof ts === 'number' && isFinite(ts)) {
    // the engine stamps events with time.time(); instances carry '...Z' ISO strings
    return new Date(ts * 1000).toISOString().replace(/\.\d+Z$/, 'Z');
  }
  return typeof ts === 'string' ? ts : '';
}

/** "3 min ago" style age of an ISO timestamp relative to *now* (ms since the epoch). */
export function age(iso: string, now: number = Date.now()): string {
  if (!iso) {
    return '';
  }
  // the service writes naive UTC with a 'Z'; tolerate a missing zone
  const t = Date.parse(/[zZ]|[+-]\d\d:?\d\d$/.test(iso) ? iso : iso + 'Z');
  if (isNaN(t)) {
    return '';
  }
  const s = Math.max(0, Math.round((now - t) / 1000));
  if (s < 60) {
    return 'just now';
  }
  const m = Math.floor(s / 60);
  if (m < 60) {
    return `${m} min ago`;
  }
  const h = Math.floor(m / 60);
  if (h < 48) {
    return `${h} h ago`;
  }
  return `${Math.floor(h / 24)} days ago`;
}
