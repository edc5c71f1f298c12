/**
 * @jest-environment node
 */
import { HeroesApiError, IWorkflowEvent, IWorkflowInstance } from '../api';
import { ILiveClient, ILiveStatus, LiveUpdater } from '../live';

/** An event stream the test feeds: push() events, end() or fail() it. */
class Channel {
  opened = 0;
  closed = 0;
  private queue: IWorkflowEvent[] = [];
  private waiting: (() => void) | null = null;
  private done: Error | true | null = null;

  push(e: IWorkflowEvent) {
    this.queue.push(e);
    this.wake();
  }
  end() {
    this.done = true;
    this.wake();
  }
  fail(err: Error) {
    this.done = err;
    this.wake();
  }
  private wake() {
    const w = this.waiting;
    this.waiting = null;
    w?.();
  }
  async *events(signal?: AbortSignal, onOpen?: () => void): AsyncGenerator<IWorkflowEvent> {
    this.opened++;
    const onAbort = () => this.wake();
    signal?.addEventListener('abort', onAbort);
    onOpen?.();
    try {
      for (;;) {
        if (signal?.aborted) {
          throw new DOMException('aborted', 'AbortError');
        }
        if (this.queue.length) {
          yield this.queue.shift()!;
          continue;
        }
        if (this.done === true) {
          return;
        }
        if (this.done) {
          throw this.done;
        }
        await new Promise<void>(resolve => (this.waiting = resolve));
      }
    } finally {
      this.closed++;
      signal?.removeEventListener('abort', onAbort);
    }
  }
}

function setup(options: { stream?: string | null; list?: IWorkflowInstance[] } = {}) {
  const lists: IWorkflowInstance[][] = [];
  const statuses: ILiveStatus[] = [];
  let current: IWorkflowInstance[] = options.list ?? [{ id: 'a', state: 'queued' }];
  const channels: Channel[] = [];
  const client = {
    listInstances: jest.fn(async () => current.map(i => ({ ...i }))),
    findEventStream: jest.fn(async () => (options.stream === undefined ? '/organization/workflow/events' : options.stream)),
    events: jest.fn((path: string, signal?: AbortSignal, onOpen?: () => void) => {
      const ch = new Channel();
      channels.push(ch);
      return ch.events(signal, onOpen);
    })
  };
  const updater = new LiveUpdater({
    client: client as unknown as ILiveClient,
    onChange: l => lists.push(l),
    onStatus: s => statuses.push(s),
    pollInterval: 10000,
    reconnectDelay: 1000,
    maxReconnectDelay: 4000,
    refetchDelay: 200
  });
  return {
    updater,
    client,
    lists,
    statuses,
    channels,
    setList: (l: IWorkflowInstance[]) => (current = l)
  };
}

const flush = () => jest.advanceTimersByTimeAsync(0);

beforeEach(() => jest.useFakeTimers());
afterEach(() => jest.useRealTimers());

describe('LiveUpdater without an event stream', () => {
  it('fetches the list, then polls every pollInterval until stopped', async () => {
    const t = setup({ stream: null });
    t.updater.start();
    await flush();
    expect(t.client.listInstances).toHaveBeenCalledTimes(1);
    expect(t.lists.at(-1)).toEqual([{ id: 'a', state: 'queued' }]);
    expect(t.updater.status).toMatchObject({
      mode: 'polling',
      message: 'Checking every 10 s (the service offers no event stream).'
    });

    t.setList([{ id: 'a', state: 'running' }]);
    await jest.advanceTimersByTimeAsync(10000);
    expect(t.client.listInstances).toHaveBeenCalledTimes(2);
    expect(t.lists.at(-1)).toEqual([{ id: 'a', state: 'running' }]);

    t.updater.stop();
    await jest.advanceTimersByTimeAsync(60000);
    expect(t.client.listInstances).toHaveBeenCalledTimes(2);
    expect(t.updater.status.mode).toBe('idle');
  });

  it('polls when the OpenAPI document cannot be read', async () => {
    const t = setup();
    t.client.findEventStream.mockRejectedValueOnce(new HeroesApiError(503, 'down', 'service_unreachable'));
    t.updater.start();
    await flush();
    expect(t.updater.status.mode).toBe('polling');
    expect(t.client.events).not.toHaveBeenCalled();
  });

  it('reports a failed fetch with the API message and recovers at the next poll', async () => {
    const t = setup({ stream: null });
    t.client.listInstances.mockRejectedValueOnce(
      new HeroesApiError(503, 'The HEROES service is unreachable; retry later.', 'service_unreachable')
    );
    t.updater.start();
    await flush();
    expect(t.updater.status).toMatchObject({
      mode: 'error',
      message: 'The HEROES service is unreachable; retry later.'
    });
    await jest.advanceTimersByTimeAsync(10000);
    expect(t.updater.status.mode).toBe('polling');
    expect(t.lists.at(-1)).toEqual([{ id: 'a', state: 'queued' }]);
  });
});

describe('LiveUpdater with an event stream', () => {
  it('applies events as they come, without polling', async () => {
    const t = setup();
    t.updater.start();
    await flush();
    expect(t.updater.status).toEqual({ mode: 'stream', message: 'Live: updates as they happen.' });
    expect(t.updater.streamPath).toBe('/organization/workflow/events');
    const fetches = t.client.listInstances.mock.calls.length; // once at start, once when opened

    t.channels[0].push({ type: 'instance', instance: 'a', state: 'running' });
    await flush();
    expect(t.lists.at(-1)).toEqual([expect.objectContaining({ id: 'a', state: 'running' })]);

    await jest.advanceTimersByTimeAsync(60000);
    expect(t.client.listInstances).toHaveBeenCalledTimes(fetches);
    t.updater.stop();
    await flush();
    expect(t.channels[0].closed).toBe(1);
  });

  it('gathers events about unknown instances into one fetch', async () => {
    const t = setup();
    t.updater.start();
    await flush();
    const fetches = t.client.listInstances.mock.calls.length;
    t.setList([
      { id: 'a', state: 'queued' },
      { id: 'b', state: 'new' }
    ]);
    t.channels[0].push({ type: 'instance', instance: 'b', state: 'new' });
    t.channels[0].push({ type: 'job', instance: 'b', step: 's', state: 'queued' });
    t.channels[0].push({ type: 'overflow' });
    await flush();
    expect(t.client.listInstances).toHaveBeenCalledTimes(fetches);
    await jest.advanceTimersByTimeAsync(200);
    expect(t.client.listInstances).toHaveBeenCalledTimes(fetches + 1);
    expect(t.lists.at(-1)?.map(i => i.id)).toEqual(['a', 'b']);
    t.updater.stop();
  });

  it('polls while the stream is broken and reconnects with growing delays', async () => {
    const t = setup();
    t.updater.start();
    await flush();
    t.channels[0].fail(new HeroesApiError(502, 'lost', 'service_unreachable'));
    await flush();
    expect(t.updater.status).toEqual({
      mode: 'polling',
      message: 'Live updates interrupted; checking every 10 s, reconnecting in 1 s.'
    });
    // the stream had opened, so the first retry comes after reconnectDelay
    t.client.events.mockImplementationOnce(() => {
      throw new HeroesApiError(503, 'down', 'service_unreachable');
    });
    await jest.advanceTimersByTimeAsync(1000);
    expect(t.client.events).toHaveBeenCalledTimes(2);
    expect(t.updater.status.message).toMatch(/reconnecting in 2 s/);
    await jest.advanceTimersByTimeAsync(2000);
    expect(t.client.events).toHaveBeenCalledTimes(3);
    expect(t.updater.status.mode).toBe('stream');
    // back on the stream: no more polling
    const fetches = t.client.listInstances.mock.calls.length;
    await jest.advanceTimersByTimeAsync(30000);
    expect(t.client.listInstances).toHaveBeenCalledTimes(fetches);
    t.updater.stop();
  });

  it('reopens at once a stream the service ended after its time, without polling', async () => {
    const t = setup();
    t.updater.start();
    await flush();
    await jest.advanceTimersByTimeAsync(6000); // lived longer than minStreamTime (5 s)
    const fetches = t.client.listInstances.mock.calls.length;
    t.channels[0].end();
    await flush();
    expect(t.client.events).toHaveBeenCalledTimes(2);
    expect(t.statuses.map(s => s.mode)).not.toContain('polling');
    expect(t.updater.status.mode).toBe('stream');
    // reopened: one fetch to catch up, no polling
    expect(t.client.listInstances).toHaveBeenCalledTimes(fetches + 1);
    await jest.advanceTimersByTimeAsync(30000);
    expect(t.client.listInstances).toHaveBeenCalledTimes(fetches + 1);
    t.updater.stop();
  });

  it('treats a stream ended right after opening as broken', async () => {
    const t = setup();
    t.updater.start();
    await flush();
    t.channels[0].end();
    await flush();
    expect(t.updater.status.mode).toBe('polling');
    expect(t.client.events).toHaveBeenCalledTimes(1);
    await jest.advanceTimersByTimeAsync(1000);
    expect(t.client.events).toHaveBeenCalledTimes(2);
    t.updater.stop();
  });

  it('caps the reconnect delay', async () => {
    const t = setup();
    t.client.events.mockImplementation(() => {
      throw new HeroesApiError(503, 'down', 'service_unreachable');
    });
    t.updater.start();
    await flush();
    const delays = [];
    for (let i = 0; i < 5; i++) {
      const delay = t.updater.status.message.match(/reconnecting in (\d+) s/)![1];
      delays.push(delay);
      await jest.advanceTimersByTimeAsync(Number(delay) * 1000);
    }
    expect(delays).toEqual(['1', '2', '4', '4', '4']);
    t.updater.stop();
  });

  it('restart() drops the list and follows anew (another organization)', async () => {
    const t = setup();
    t.updater.start();
    await flush();
    t.updater.restart();
    expect(t.updater.instances).toEqual([]);
    await flush();
    expect(t.channels.length).toBe(2);
    expect(t.channels[0].closed).toBe(1);
    expect(t.updater.running).toBe(true);
    t.updater.stop();
  });
});
