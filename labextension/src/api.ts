/**
 * The HEROES REST API as seen from JupyterLab: every call goes through the Jupyter server extension
 * (`<base_url>/heroes/api/v1/...`), which forwards it to the HEROES service as the logged-in user.
 *
 * This module has no runtime dependency on JupyterLab: the function that sends a request is injected
 * (in the extension it is `ServerConnection.makeRequest` with the app's settings, which adds the XSRF
 * token and the server's authorization), so the client is tested with plain fakes.
 */
import { SSEParser, ISSEMessage } from './sse';

/** Where the server extension serves the API, relative to the Jupyter server's base URL. */
export const API_PATH = 'heroes/api/v1';

/** The header selecting the organization a request acts in (see the service's `auth.py`). */
export const ORG_HEADER = 'X-Heroes-Organization';

/**
 * The server extension's own endpoint copying a workflow's outputs into the server's files
 * (relative to the Jupyter server's base URL; `jupyter_heroes/serverext/results.py`).
 */
export const RESULTS_PATH = 'heroes/results';

/** What the server extension answers when it copied a workflow's outputs (paths from the server's root). */
export interface IResultsCopy {
  instance: string;
  state: string;
  directory: string;
  downloaded: string[];
  kept: string[];
  bytes: number;
}

/** D3.6 workflow endpoints (relative to the API root). */
export const PATHS = {
  me: '/organization/auth/me',
  templates: '/organization/workflow/template',
  instances: '/organization/workflow/instance',
  submit: '/organization/workflow/submit',
  openapi: '/openapi.json'
} as const;

/** Sends one HTTP request; `ServerConnection.makeRequest(url, init, settings)` in the extension. */
export type RequestFn = (url: string, init: RequestInit) => Promise<Response>;

/** An API error: the service's (or the server extension's) `{message, reason}` with the status. */
export class HeroesApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly reason: string
  ) {
    super(message);
    this.name = 'HeroesApiError';
  }

  /** Whether retrying later may help (the service or the network is down, or overloaded). */
  get transient(): boolean {
    return this.status === 0 || this.status === 429 || this.status >= 500;
  }
}

export interface IRole {
  name: string;
  [key: string]: unknown;
}

export interface IOrganization {
  name: string;
  display_name?: string;
  kind?: string;
  roles?: IRole[];
  projects?: { name: string }[];
  scopes?: string[];
}

export interface IMe {
  name: string;
  organizations: IOrganization[];
  platform_scopes?: string[];
  [key: string]: unknown;
}

export interface IJob {
  step?: string;
  state?: string;
  reason?: string;
  [key: string]: unknown;
}

/** A workflow instance as the service lists it; only `id` and `state` are relied upon. */
export interface IWorkflowInstance {
  id: string;
  state: string;
  template?: string | { name?: string; version?: string | number };
  template_name?: string;
  template_version?: string | number;
  name?: string;
  project?: string;
  cluster?: string;
  created?: string;
  updated?: string;
  jobs?: IJob[];
  [key: string]: unknown;
}

/** A progress event of the engine (`jupyter_heroes/workflows/events.py`). */
export interface IWorkflowEvent {
  type: string;
  instance?: string;
  state?: string;
  step?: string;
  reason?: string;
  [key: string]: unknown;
}

export interface IRequestOptions {
  body?: unknown;
  query?: Record<string, string | number | boolean | undefined>;
  signal?: AbortSignal;
  /** send no organization header even if one is selected */
  noOrganization?: boolean;
  /** *path* is relative to the Jupyter server's base URL, not to the HEROES API */
  serverPath?: boolean;
}

export interface IClientOptions {
  /** the Jupyter server's base URL (`ServerConnection.ISettings.baseUrl`), ending in '/' */
  baseUrl: string;
  request: RequestFn;
  organization?: string | null;
}

/** A client of the HEROES API through the Jupyter server extension. */
export class HeroesClient {
  constructor(options: IClientOptions) {
    this.baseUrl = options.baseUrl.endsWith('/') ? options.baseUrl : options.baseUrl + '/';
    this._request = options.request;
    this.organization = options.organization ?? null;
  }

  readonly baseUrl: string;

  /** The organization requests act in (`X-Heroes-Organization`); null: the caller's only one. */
  organization: string | null;

  /**
   * The full URL of API path *path* (which starts with '/'), with *query*; with *serverPath*, of
   * the server's own path *path* instead.
   */
  url(path: string, query?: IRequestOptions['query'], serverPath = false): string {
    let url = this.baseUrl + (serverPath ? path.replace(/^\//, '') : API_PATH + path);
    const params = Object.entries(query ?? {}).filter(([, v]) => v !== undefined && v !== '');
    if (params.length) {
      url +=
        '?' +
        params
          .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(String(v))}`)
          .join('&');
    }
    return url;
  }

  private headers(accept: string, options: IRequestOptions): Record<string, string> {
    const headers: Record<string, string> = { Accept: accept };
    if (options.body !== undefined) {
      headers['Content-Type'] = 'application/json';
    }
    if (this.organization && !options.noOrganization) {
      headers[ORG_HEADER] = this.organization;
    }
    return headers;
  }

  private async send(
    method: string,
    path: string,
    accept: string,
    options: IRequestOptions
  ): Promise<Response> {
    const init: RequestInit = {
      method,
      headers: this.headers(accept, options),
      signal: options.signal
    };
    if (options.body !== undefined) {
      init.body = JSON.stringify(options.body);
    }
    let response: Response;
    try {
      response = await this._request(this.url(path, options.query, options.serverPath), init);
    } catch (err) {
      if (isAbort(err)) {
        throw err;
      }
      throw new HeroesApiError(
        0,
        'Cannot reach the Jupyter server: check your network connection, or that your server is ' +
          'still running (File > Hub Control Panel), then refresh.',
        'network_error'
      );
    }
    if (!response.ok) {
      throw await errorFrom(response);
    }
    return response;
  }

  /** Call the API and return its JSON answer (undefined for an empty answer such as 204). */
  async request<T = unknown>(
    method: string,
    path: string,
    options: IRequestOptions = {}
  ): Promise<T> {
    const response = await this.send(method, path, 'application/json', options);
    const text = await response.text();
    if (!text) {
      return undefined as T;
    }
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new HeroesApiError(
        502,
        `The HEROES API answered ${method} ${path} with something that is not JSON; ` +
          'the server extension may be misconfigured (ask your administrator).',
        'bad_response'
      );
    }
  }

  /** Who the caller is, with their organizations, roles and scopes. */
  me(signal?: AbortSignal): Promise<IMe> {
    return this.request<IMe>('GET', PATHS.me, { signal, noOrganization: true });
  }

  /** The caller's workflow instances in the selected organization. */
  async listInstances(signal?: AbortSignal): Promise<IWorkflowInstance[]> {
    const answer = await this.request<unknown>('GET', PATHS.instances, { signal });
    return asList<IWorkflowInstance>(answer, ['instances', 'items']).filter(
      i => i && typeof i.id !== 'undefined'
    );
  }

  getInstance(id: string, signal?: AbortSignal): Promise<IWorkflowInstance> {
    return this.request('GET', `${PATHS.instances}/${encodeURIComponent(id)}`, { signal });
  }

  /** Cancel a running instance (D3.6: DELETE on the instance). */
  cancelInstance(id: string): Promise<IWorkflowInstance | undefined> {
    return this.request('DELETE', `${PATHS.instances}/${encodeURIComponent(id)}`);
  }

  /**
   * Copy a workflow's outputs into the Jupyter server's files (`heroes-results/<id>/`); files
   * already there with the same content are kept.
   */
  copyResults(id: string): Promise<IResultsCopy> {
    return this.request('POST', `/${RESULTS_PATH}/${encodeURIComponent(id)}`, { serverPath: true });
  }

  async listTemplates(signal?: AbortSignal): Promise<Record<string, unknown>[]> {
    return asList(await this.request<unknown>('GET', PATHS.templates, { signal }), [
      'templates',
      'items'
    ]);
  }

  submit(body: Record<string, unknown>): Promise<IWorkflowInstance> {
    return this.request('POST', PATHS.submit, { body });
  }

  /**
   * The API path of the workflow event stream, found in the service's OpenAPI document: a GET
   * under `/organization/workflow` answering `text/event-stream`. Null when the service has none.
   */
  async findEventStream(signal?: AbortSignal): Promise<string | null> {
    const doc = await this.request<IOpenAPI>('GET', PATHS.openapi, {
      signal,
      noOrganization: true
    });
    return eventStreamPath(doc);
  }

  /**
   * The events of stream *path*, as they come. Ends when the server closes the stream; throws
   * HeroesApiError when it cannot be opened, and an AbortError when *signal* aborts. *onOpen* is
   * called once the stream is open (before any event arrives).
   */
  async *events(
    path: string,
    signal?: AbortSignal,
    onOpen?: () => void
  ): AsyncGenerator<IWorkflowEvent> {
    const response = await this.send('GET', path, 'text/event-stream', { signal });
    const type = response.headers.get('Content-Type') ?? '';
    if (!type.startsWith('text/event-stream')) {
      throw new HeroesApiError(
        502,
        `${path} did not answer with an event stream (Content-Type ${type || 'missing'})`,
        'bad_response'
      );
    }
    if (!response.body) {
      throw new HeroesApiError(502, 'the event stream has no body', 'bad_response');
    }
    onOpen?.();
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    const parser = new SSEParser();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) {
          break;
        }
        for (const message of parser.feed(decoder.decode(value, { stream: true }))) {
          const event = toEvent(message);
          if (event) {
            yield event;
          }
        }
      }
    } finally {
      reader.cancel().catch(() => undefined);
    }
  }

  private _request: RequestFn;
}

interface IOpenAPI {
  paths?: Record<string, Record<string, IOpenAPIOperation>>;
}

interface IOpenAPIOperation {
  responses?: Record<string, { content?: Record<string, unknown> }>;
}

/**
 * The workflow event stream in an OpenAPI document: the first parameterless GET under
 * `/organization/workflow` answering `text/event-stream`, else one named `.../events`.
 */
export function eventStreamPath(doc: IOpenAPI | undefined | null): string | null {
  const paths = doc?.paths ?? {};
  const candidates = Object.entries(paths).filter(
    ([path, ops]) => path.startsWith('/organization/workflow') && !path.includes('{') && !!ops?.get
  );
  for (const [path, ops] of candidates) {
    for (const answer of Object.values(ops.get?.responses ?? {})) {
      if (answer?.content && 'text/event-stream' in answer.content) {
        return path;
      }
    }
  }
  const named = candidates.find(([path]) => path.endsWith('/events'));
  return named ? named[0] : null;
}

/** A workflow event from an SSE message (JSON in `data`); null for keep-alives and junk. */
export function toEvent(message: ISSEMessage): IWorkflowEvent | null {
  if (!message.data) {
    return null;
  }
  let data: unknown;
  try {
    data = JSON.parse(message.data);
  } catch {
    return null;
  }
  if (!data || typeof data !== 'object' || Array.isArray(data)) {
    return null;
  }
  const event = data as IWorkflowEvent;
  if (typeof event.type !== 'string') {
    event.type = message.event || 'message';
  }
  return event;
}

/** A list answer: the array itself, or the array under one of *keys* of an object answer. */
export function asList<T>(answer: unknown, keys: string[]): T[] {
  if (Array.isArray(answer)) {
    return answer as T[];
  }
  if (answer && typeof answer === 'object') {
    for (const key of keys) {
      const value = (answer as Record<string, unknown>)[key];
      if (Array.isArray(value)) {
        return value as T[];
      }
    }
  }
  return [];
}

/** The HeroesApiError for a failed response: its JSON `{message, reason}` when there is one. */
export async function errorFrom(response: Response): Promise<HeroesApiError> {
  let text = '';
  try {
    text = await response.text();
  } catch {
    // the body could not be read: fall back to the status line
  }
  try {
    const body = JSON.parse(text);
    if (body && typeof body.message === 'string') {
      return new HeroesApiError(
        response.status,
        body.message,
        typeof body.reason === 'string' ? body.reason : ''
      );
    }
  } catch {
    // not JSON (a proxy's HTML error page): described below
  }
  const message =
    response.status === 404
      ? 'The HEROES API is not available on this Jupyter server: the jupyter_heroes server ' +
        'extension is not enabled (ask your administrator).'
      : `The HEROES API answered ${response.status} ${response.statusText || ''}`.trim();
  return new HeroesApiError(response.status, message, 'http_' + response.status);
}

function isAbort(err: unknown): boolean {
  return !!err && typeof err === 'object' && (err as { name?: string }).name === 'AbortError';
}
