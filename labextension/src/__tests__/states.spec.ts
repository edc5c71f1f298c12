import { IWorkflowInstance } from '../api';
import {
  STATES,
  age,
  applyEvent,
  describeState,
  instanceRow,
  isFinal,
  sortRows,
  summarize
} from '../states';

describe('states', () => {
  it('knows every engine state and which are final', () => {
    const finals = Object.entries(STATES)
      .filter(([, s]) => s.final)
      .map(([k]) => k)
      .sort();
    expect(finals).toEqual([
      'cancelled',
      'completed',
      'failed',
      'node_fail',
      'out_of_memory',
      'timeout'
    ]);
    expect(describeState('RUNNING').kind).toBe('running');
    expect(describeState('failing')).toMatchObject({ kind: 'failure', final: false });
    expect(isFinal('completed')).toBe(true);
    expect(isFinal('queued')).toBe(false);
  });

  it('shows an unknown state as it is, not final', () => {
    expect(describeState('staging')).toMatchObject({ label: 'staging', kind: 'unknown', final: false });
    expect(describeState(undefined).label).toBe('unknown');
  });
});

describe('instanceRow', () => {
  it('names the template with its version, and lists project, cluster and steps', () => {
    const row = instanceRow({
      id: 'a1',
      state: 'running',
      template: { name: 'heat-pipeline', version: 2 },
      project: 'crash-sim',
      cluster: 'hpc1',
      updated: '2024-05-01T10:00:00Z',
      jobs: [
        { step: 'prepare', state: 'completed' },
        { step: 'solve', state: 'running' }
      ]
    });
    expect(row.title).toBe('heat-pipeline v2');
    expect(row.detail).toBe('project crash-sim · on hpc1 · 2 steps');
    expect(row.state.label).toBe('running');
    expect(row.steps.map(s => [s.name, s.state.kind])).toEqual([
      ['prepare', 'success'],
      ['solve', 'running']
    ]);
  });

  it('falls back to template_name, then to the id', () => {
    expect(instanceRow({ id: 'x', state: 'new', template_name: 'sweep', template_version: '1' }).title).toBe(
      'sweep v1'
    );
    expect(instanceRow({ id: 'x', state: 'new', template: 'sweep' }).title).toBe('sweep');
    expect(instanceRow({ id: 'x', state: 'new' }).title).toBe('workflow x');
  });
});

describe('sortRows and summarize', () => {
  const rows = [
    instanceRow({ id: 'old-done', state: 'completed', updated: '2024-01-01T00:00:00Z' }),
    instanceRow({ id: 'new-failed', state: 'failed', updated: '2024-03-01T00:00:00Z' }),
    instanceRow({ id: 'queued', state: 'queued', updated: '2024-01-02T00:00:00Z' }),
    instanceRow({ id: 'running', state: 'running', updated: '2024-02-01T00:00:00Z' })
  ];
  it('puts live instances first, each group newest first', () => {
    expect(sortRows(rows).map(r => r.id)).toEqual(['running', 'queued', 'new-failed', 'old-done']);
  });
  it('counts live, finished and failed', () => {
    expect(summarize(rows)).toEqual({ live: 2, finished: 2, failed: 1 });
  });
});

describe('applyEvent', () => {
  const list = (): IWorkflowInstance[] => [
    { id: 'a', state: 'queued', jobs: [{ step: 's1', state: 'queued' }] },
    { id: 'b', state: 'running' }
  ];

  it('changes the state of a known instance and stamps the time', () => {
    const l = list();
    expect(applyEvent(l, { type: 'instance', instance: 'a', state: 'running', ts: 1714557600 })).toEqual(
      { changed: true, refetch: false }
    );
    expect(l[0].state).toBe('running');
    expect(l[0].updated).toBe('2024-05-01T10:00:00Z');
  });

  it('does nothing for a repeated state', () => {
    const l = list();
    expect(applyEvent(l, { type: 'instance', instance: 'b', state: 'running' }).changed).toBe(false);
  });

  it('asks for a fetch on an unknown instance or an overflow', () => {
    expect(applyEvent(list(), { type: 'instance', instance: 'zz', state: 'new' })).toEqual({
      changed: false,
      refetch: true
    });
    expect(applyEvent(list(), { type: 'overflow' }).refetch).toBe(true);
  });

  it('updates the step of a job event, with its reason', () => {
    const l = list();
    const r = applyEvent(l, {
      type: 'job',
      instance: 'a',
      step: 's1',
      state: 'failed',
      reason: 'exit 1'
    });
    expect(r.changed).toBe(true);
    expect(l[0].jobs?.[0]).toEqual({ step: 's1', state: 'failed', reason: 'exit 1' });
    // a step the list does not know: fetch
    expect(applyEvent(l, { type: 'job', instance: 'a', step: 's9', state: 'queued' }).refetch).toBe(true);
  });

  it('takes a snapshot as the whole instance: replaces a known one, adds a new one', () => {
    const l = list();
    const fresh = { id: 'a', state: 'running', jobs: [{ step: 's1', state: 'running' }] };
    expect(applyEvent(l, { type: 'snapshot', instance: 'a', state: 'running', data: fresh })).toEqual({
      changed: true,
      refetch: false
    });
    expect(l[0]).toEqual(fresh);
    expect(l[0]).not.toBe(fresh);
    expect(applyEvent(l, { type: 'snapshot', instance: 'a', data: { ...fresh } }).changed).toBe(false);
    expect(applyEvent(l, { type: 'snapshot', instance: 'c', data: { id: 'c', state: 'queued' } })).toEqual({
      changed: true,
      refetch: false
    });
    expect(l.map(i => i.id)).toEqual(['a', 'b', 'c']);
    // without its data: fetch the list
    expect(applyEvent(l, { type: 'snapshot', instance: 'd', state: 'queued' }).refetch).toBe(true);
  });

  it('ignores other event types', () => {
    expect(applyEvent(list(), { type: 'hello' })).toEqual({ changed: false, refetch: false });
  });
});

describe('age', () => {
  const now = Date.parse('2024-05-01T12:00:00Z');
  it('says how long ago, tolerating a missing zone', () => {
    expect(age('2024-05-01T11:59:30Z', now)).toBe('just now');
    expect(age('2024-05-01T11:45:00', now)).toBe('15 min ago');
    expect(age('2024-05-01T09:00:00Z', now)).toBe('3 h ago');
    expect(age('2024-04-25T12:00:00Z', now)).toBe('6 days ago');
    expect(age('', now)).toBe('');
    expect(age('yesterday', now)).toBe('');
  });
});
