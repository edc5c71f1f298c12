/**
 * Keeps the sidebar's list of workflow instances current: from the service's event stream when it
 * has one, else by polling; back to the stream (with growing delays) when it breaks.
 *
 * No DOM and no JupyterLab here: the client is injected, timers are the global ones (so tests run it
 * under jest's fake timers).
 */
import { HeroesApiError, HeroesClient, IWorkflowEvent, IWorkflowInstance } from './api';
import { applyEvent } from './states';

export type LiveMode = 'idle' | 'stream' | 'polling' | 'error';

export interface ILiveStatus {
  mode: LiveMode;
  /** one line for the user */
  message: string;
  error?: HeroesApiError;
}

/** What the updater needs of the client. */
export type ILiveClient = Pick<HeroesClient, 'listInstances' | 'findEventStream' | 'events'>;

export interface ILiveOptions {
  client: ILiveClient;
  /** the list changed (a new array each time) */
  onChange: (instances: IWorkflowInstance[]) => void;
  onStatus: (status: ILiveStatus) => void;
  /** ms between two fetches of the list while there is no stream (default 15 s) */
  pollInterval?: number;
  /** ms before the first attempt to reopen a broken stream; doubles up to maxReconnectDelay */
  reconnectDelay?: number;
  maxReconnectDelay?: number;
  /** ms to gather events that ask for a fetch of the list into one fetch (default 300) */
  refetchDelay?: number;
  /** a stream the service ends normally after this many ms is reopened at once (default 5 s) */
  minStreamTime?: number;
}

export class LiveUpdater {
  constructor(options: ILiveOptions) {
    this._client = options.client;
    this._onChange = options.onChange;
    this._onStatus = options.onStatus;
    this.pollInterval = options.pollInterval ?? 15000;
    this.reconnectDelay = options.reconnectDelay ?? 2000;
    this.maxReconnectDelay = options.maxReconnectDelay ?? 60000;
    this.refetchDelay = options.refetchDelay ?? 300;
    this.minStreamTime = options.minStreamTime ?? 5000;
  }

  readonly pollInterval: number;
  readonly reconnectDelay: number;
  readonly maxReconnectDelay: number;
  readonly refetchDelay: number;
  /** ms a stream must have lived for its normal end to be followed by an immediate reconnect */
  readonly minStreamTime: number;

  /** The instances as last fetched and updated by events. */
  get instances(): IWorkflowInstance[] {
    return this._instances;
  }

  get status(): ILiveStatus {
    return this._status;
  }

  get running(): boolean {
    return this._abort !== null;
  }

  /** Fetch the list and follow changes until stop(). Calling it while running does nothing. */
  start(): void {
    if (this._abort) {
      return;
    }
    this._abort = new AbortController();
    this._failures = 0;
    this._failing = false;
    void this.refresh();
    void this.follow(this._abort);
  }

  /** Stop following: close the stream, cancel every timer. */
  stop(): void {
    this._abort?.abort();
    this._abort = null;
    this.clearTimers();
    this.setStatus({ mode: 'idle', message: '' });
  }

  /** stop() then start(): after the organization changed. */
  restart(): void {
    this.stop();
    this._instances = [];
    this.start();
  }

  /** Fetch the list now. Resolves false (and reports the error) when that failed. */
  async refresh(): Promise<boolean> {
    const abort = this._abort;
    try {
      const list = await this._client.listInstances(abort?.signal);
      if (abort !== this._abort) {
        return false; // stopped or restarted meanwhile
      }
      this._instances = list;
      this._failing = false;
      this._onChange([...list]);
      if (this._status.mode === 'error') {
        this.setStatus(this._followStatus);
      }
      return true;
    } catch (err) {
      if (abort !== this._abort || isAbort(err)) {
        return false;
      }
      const error = asApiError(err);
      this._failing = true;
      this.setStatus({ mode: 'error', message: error.message, error });
      return false;
    }
  }

  private async follow(abort: AbortController): Promise<void> {
    let path: string | null = null;
    try {
      path = await this._client.findEventStream(abort.signal);
    } catch (err) {
      if (abort.signal.aborted) {
        return;
      }
      path = null; // no OpenAPI document: poll
    }
    if (abort.signal.aborted) {
      return;
    }
    if (!path) {
      this.poll(`Checking every ${seconds(this.pollInterval)} (the service offers no event stream).`);
      return;
    }
    this._streamPath = path;
    await this.stream(abort, path);
  }

  private async stream(abort: AbortController, path: string): Promise<void> {
    const opened = { value: false };
    const t0 = Date.now();
    let failed = false;
    try {
      const onOpen = () => {
        opened.value = true;
        this.opened();
      };
      for await (const event of this._client.events(path, abort.signal, onOpen)) {
        this.onEvent(event);
      }
    } catch (err) {
      if (abort.signal.aborted) {
        return;
      }
      failed = true; // fall through: reconnect
    }
    if (abort.signal.aborted || abort !== this._abort) {
      return;
    }
    if (opened.value && !failed && Date.now() - t0 >= this.minStreamTime) {
      // the service closed a stream that had lived its time (it bounds their length): go on at once
      this._failures = 0;
      void this.stream(abort, path);
      return;
    }
    if (opened.value) {
      this._failures = 0;
    }
    const delay = Math.min(this.maxReconnectDelay, this.reconnectDelay * 2 ** this._failures);
    this._failures++;
    this.poll(
      `Live updates interrupted; checking every ${seconds(this.pollInterval)}, ` +
        `reconnecting in ${seconds(delay)}.`
    );
    this._reconnectTimer = setTimeout(() => {
      this._reconnectTimer = null;
      if (abort === this._abort) {
        void this.stream(abort, path);
      }
    }, delay);
  }

  /** The stream delivers: stop polling, and fetch once to catch what happened before it opened. */
  private opened(): void {
    this.stopPolling();
    this.follows({ mode: 'stream', message: 'Live: updates as they happen.' });
    void this.refresh();
  }

  private onEvent(event: IWorkflowEvent): void {
    const applied = applyEvent(this._instances, event);
    if (applied.changed) {
      this._onChange([...this._instances]);
    }
    if (applied.refetch && this._refetchTimer === null) {
      this._refetchTimer = setTimeout(() => {
        this._refetchTimer = null;
        void this.refresh();
      }, this.refetchDelay);
    }
  }

  /** How changes are followed now; shown unless the last fetch failed (its error stays shown). */
  private follows(status: ILiveStatus): void {
    this._followStatus = status;
    if (!this._failing) {
      this.setStatus(status);
    }
  }

  private poll(message: string): void {
    this.follows({ mode: 'polling', message });
    if (this._pollTimer === null) {
      this._pollTimer = setInterval(() => void this.refresh(), this.pollInterval);
    }
  }

  private stopPolling(): void {
    if (this._pollTimer !== null) {
      clearInterval(this._pollTimer);
      this._pollTimer = null;
    }
  }

  private clearTimers(): void {
    this.stopPolling();
    for (const t of [this._reconnectTimer, this._refetchTimer]) {
      if (t !== null) {
        clearTimeout(t);
      }
    }
    this._reconnectTimer = this._refetchTimer = null;
  }

  private setStatus(status: ILiveStatus): void {
    this._status = status;
    this._onStatus(status);
  }

  /** the event stream path in use (null before it is known or when there is none) */
  get streamPath(): string | null {
    return this._streamPath;
  }

  private _client: ILiveClient;
  private _onChange: ILiveOptions['onChange'];
  private _onStatus: ILiveOptions['onStatus'];
  private _instances: IWorkflowInstance[] = [];
  private _status: ILiveStatus = { mode: 'idle', message: '' };
  private _followStatus: ILiveStatus = { mode: 'idle', message: '' };
  private _abort: AbortController | null = null;
  private _failures = 0;
  private _failing = false;
  private _streamPath: string | null = null;
  private _pollTimer: ReturnType<typeof setInterval> | null = null;
  private _reconnectTimer: ReturnType<typeof setTimeout> | null = null;
  private _refetchTimer: ReturnType<typeof setTimeout> | null = null;
}

function seconds(ms: number): string {
  return `${Math.round(ms / 1000)} s`;
}

function isAbort(err: unknown): boolean {
  return !!err && typeof err === 'object' && (err as { name?: string }).name === 'AbortError';
}

function asApiError(err: unknown): HeroesApiError {
  if (err instanceof HeroesApiError) {
    return err;
  }
  const message = err instanceof Error ? err.message : String(err);
  return new HeroesApiError(0, message, 'client_error');
}
