/**
 * @jest-environment node
 */
// node's fetch classes (Response, ReadableStream, TextEncoder) stand in for the browser's.
import {
  API_PATH,
  HeroesApiError,
  HeroesClient,
  ORG_HEADER,
  PATHS,
  RESULTS_PATH,
  asList,
  eventStreamPath,
  toEvent
} from '../api';

interface ICall {
  url: string;
  init: RequestInit;
}

function fakeServer(respond: (call: ICall) => Response | Promise<Response>) {
  const calls: ICall[] = [];
  const request = async (url: string, init: RequestInit) => {
    const call = { url, init };
    calls.push(call);
    return respond(call);
  };
  return { calls, request };
}

const json = (status: number, body: unknown, headers: Record<string, string> = {}) =>
  new Response(JSON.stringify(body), {
    status,
    headers: { 'Content-Type': 'application/json', ...headers }
  });

function headersOf(call: ICall): Record<string, string> {
  return call.init.headers as Record<string, string>;
}

describe('HeroesClient URLs and headers', () => {
  it('builds URLs under <base_url>heroes/api/v1 with encoded queries', () => {
    const client = new HeroesClient({ baseUrl: '/user/ada', request: jest.fn() });
    expect(client.baseUrl).toBe('/user/ada/');
    expect(client.url(PATHS.instances)).toBe(
      '/user/ada/' + API_PATH + '/organization/workflow/instance'
    );
    expect(client.url('/x', { state: 'all', q: 'a b&c', empty: '', none: undefined })).toBe(
      '/user/ada/heroes/api/v1/x?state=all&q=a%20b%26c'
    );
  });

  it('sends the organization header, JSON body and Accept, and parses the answer', async () => {
    const server = fakeServer(() => json(201, { id: 'abc', state: 'new' }));
    const client = new HeroesClient({ baseUrl: '/', request: server.request, organization: 'acme' });
    const inst = await client.submit({ template: 'heat', parameters: { n: 3 } });
    expect(inst).toEqual({ id: 'abc', state: 'new' });
    const [call] = server.calls;
    expect(call.url).toBe('/heroes/api/v1/organization/workflow/submit');
    expect(call.init.method).toBe('POST');
    expect(JSON.parse(call.init.body as string)).toEqual({
      template: 'heat',
      parameters: { n: 3 }
    });
    expect(headersOf(call)).toEqual({
      Accept: 'application/json',
      'Content-Type': 'application/json',
      [ORG_HEADER]: 'acme'
    });
  });

  it('asks who the user is without an organization header and with no body', async () => {
    const me = { name: 'ada', organizations: [{ name: 'acme' }] };
    const server = fakeServer(() => json(200, me));
    const client = new HeroesClient({ baseUrl: '/', request: server.request, organization: 'acme' });
    expect(await client.me()).toEqual(me);
    expect(headersOf(server.calls[0])).toEqual({ Accept: 'application/json' });
    expect(server.calls[0].init.body).toBeUndefined();
    expect(server.calls[0].init.method).toBe('GET');
  });

  it('cancels with DELETE on the instance, id encoded, and accepts an empty 204', async () => {
    const server = fakeServer(() => new Response(null, { status: 204 }));
    const client = new HeroesClient({ baseUrl: '/', request: server.request });
    await expect(client.cancelInstance('a/b')).resolves.toBeUndefined();
    expect(server.calls[0].init.method).toBe('DELETE');
    expect(server.calls[0].url).toBe('/heroes/api/v1/organization/workflow/instance/a%2Fb');
  });

  it('asks the server extension itself, not the API, to copy results, as the organization', async () => {
    const copy = {
      instance: 'i1',
      state: 'completed',
      directory: 'heroes-results/i1',
      downloaded: ['heroes-results/i1/result.json'],
      kept: [],
      bytes: 12
    };
    const server = fakeServer(() => json(200, copy));
    const client = new HeroesClient({ baseUrl: '/user/ada/', request: server.request, organization: 'acme' });
    expect(await client.copyResults('i 1')).toEqual(copy);
    expect(server.calls[0].url).toBe('/user/ada/' + RESULTS_PATH + '/i%201');
    expect(server.calls[0].init.method).toBe('POST');
    expect(headersOf(server.calls[0])).toEqual({ Accept: 'application/json', [ORG_HEADER]: 'acme' });
  });
});

describe('HeroesClient errors', () => {
  it("turns the service's {message, reason} into a HeroesApiError with the status", async () => {
    const server = fakeServer(() =>
      json(404, { message: 'Workflow instance x not found', reason: 'not_found' })
    );
    const client = new HeroesClient({ baseUrl: '/', request: server.request });
    const err = await client.getInstance('x').catch(e => e);
    expect(err).toBeInstanceOf(HeroesApiError);
    expect(err.status).toBe(404);
    expect(err.reason).toBe('not_found');
    expect(err.message).toBe('Workflow instance x not found');
    expect(err.transient).toBe(false);
  });

  it('explains a non-JSON 404: the server extension is not enabled', async () => {
    const server = fakeServer(() => new Response('<html>404</html>', { status: 404 }));
    const client = new HeroesClient({ baseUrl: '/', request: server.request });
    await expect(client.listInstances()).rejects.toMatchObject({
      status: 404,
      reason: 'http_404',
      message: expect.stringMatching(/server extension is not enabled/)
    });
  });

  it('marks 502/503 from the server extension as transient', async () => {
    const server = fakeServer(() =>
      json(503, { message: 'the HEROES service is unreachable', reason: 'service_unreachable' })
    );
    const client = new HeroesClient({ baseUrl: '/', request: server.request });
    const err = await client.listInstances().catch(e => e);
    expect(err.transient).toBe(true);
    expect(err.reason).toBe('service_unreachable');
  });

  it('reports a network failure as status 0 network_error, not a TypeError', async () => {
    const client = new HeroesClient({
      baseUrl: '/',
      request: async () => {
        throw new TypeError('Failed to fetch');
      }
    });
    await expect(client.me()).rejects.toMatchObject({
      status: 0,
      reason: 'network_error',
      transient: true,
      message: expect.stringMatching(/Cannot reach the Jupyter server/)
    });
  });

  it('lets an abort through as it is', async () => {
    const abort = new DOMException('aborted', 'AbortError');
    const client = new HeroesClient({
      baseUrl: '/',
      request: async () => {
        throw abort;
      }
    });
    await expect(client.listInstances()).rejects.toBe(abort);
  });

  it('refuses a 200 that is not JSON', async () => {
    const server = fakeServer(() => new Response('<html>login</html>', { status: 200 }));
    const client = new HeroesClient({ baseUrl: '/', request: server.request });
    await expect(client.me()).rejects.toMatchObject({ status: 502, reason: 'bad_response' });
  });
});

describe('lists', () => {
  it('accepts a bare array or an object holding the list, and drops rows without id', async () => {
    const rows = [{ id: 'a', state: 'queued' }, { state: 'junk' }, { id: 'b', state: 'running' }];
    for (const body of [rows, { instances: rows }, { items: rows }]) {
      const server = fakeServer(() => json(200, body));
      const client = new HeroesClient({ baseUrl: '/', request: server.request });
      expect((await client.listInstances()).map(i => i.id)).toEqual(['a', 'b']);
    }
    expect(asList({ other: [1] }, ['items'])).toEqual([]);
    expect(asList(null, ['items'])).toEqual([]);
  });
});

describe('event stream discovery', () => {
  const doc = {
    paths: {
      '/organization/workflow/instance': {
        get: { responses: { '200': { content: { 'application/json': {} } } } }
      },
      '/organization/workflow/instance/{instance_id}/events': {
        get: { responses: { '200': { content: { 'text/event-stream': {} } } } }
      },
      '/organization/workflow/events': {
        get: { responses: { '200': { content: { 'text/event-stream': {} } } } }
      }
    }
  };

  it('finds the parameterless workflow GET answering text/event-stream', () => {
    expect(eventStreamPath(doc)).toBe('/organization/workflow/events');
  });

  it('falls back to a parameterless workflow GET named .../events', () => {
    const json = { '200': { content: { 'application/json': {} } } };
    expect(
      eventStreamPath({
        paths: {
          '/organization/workflow/instance/{id}/events': { get: { responses: json } },
          '/organization/workflow/events': { get: { responses: json } },
          '/organization/workflow/more/events': { post: { responses: json } }
        }
      })
    ).toBe('/organization/workflow/events');
    expect(
      eventStreamPath({ paths: { '/organization/workflow/more/events': { post: { responses: json } } } })
    ).toBeNull();
  });

  it('answers null when the service has no event stream', () => {
    expect(eventStreamPath({ paths: { '/organization/workflow/instance': {} } })).toBeNull();
    expect(eventStreamPath(null)).toBeNull();
    expect(eventStreamPath({})).toBeNull();
  });

  it('reads the OpenAPI document without an organization header', async () => {
    const server = fakeServer(() => json(200, doc));
    const client = new HeroesClient({ baseUrl: '/', request: server.request, organization: 'acme' });
    expect(await client.findEventStream()).toBe('/organization/workflow/events');
    expect(server.calls[0].url).toBe('/heroes/api/v1/openapi.json');
    expect(headersOf(server.calls[0])[ORG_HEADER]).toBeUndefined();
  });
});

function streamOf(chunks: string[]): ReadableStream<Uint8Array> {
  const encoder = new TextEncoder();
  return new ReadableStream({
    start(controller) {
      for (const c of chunks) {
        controller.enqueue(encoder.encode(c));
      }
      controller.close();
    }
  });
}

describe('events()', () => {
  it('yields JSON events from chunks cut anywhere, skipping keep-alives', async () => {
    const chunks = [
      ': keep-alive\n\n',
      'data: {"type":"instance","instance":"a","st',
      'ate":"running"}\n\nevent: job\ndata: {"instance":"a","step":"s1",',
      '"state":"completed"}\r\n\r\ndata: not json\n\n'
    ];
    const server = fakeServer(
      () =>
        new Response(streamOf(chunks), {
          status: 200,
          headers: { 'Content-Type': 'text/event-stream; charset=utf-8' }
        })
    );
    const client = new HeroesClient({ baseUrl: '/', request: server.request, organization: 'acme' });
    const opened = jest.fn();
    const got = [];
    for await (const e of client.events('/organization/workflow/events', undefined, opened)) {
      got.push(e);
    }
    expect(opened).toHaveBeenCalledTimes(1);
    expect(got).toEqual([
      { type: 'instance', instance: 'a', state: 'running' },
      { type: 'job', instance: 'a', step: 's1', state: 'completed' }
    ]);
    expect(headersOf(server.calls[0])).toMatchObject({
      Accept: 'text/event-stream',
      [ORG_HEADER]: 'acme'
    });
  });

  it('refuses an answer that is not an event stream', async () => {
    const server = fakeServer(() => json(200, []));
    const client = new HeroesClient({ baseUrl: '/', request: server.request });
    const it = client.events('/organization/workflow/events');
    await expect(it.next()).rejects.toMatchObject({ status: 502, reason: 'bad_response' });
  });

  it('throws the API error when the stream cannot be opened', async () => {
    const server = fakeServer(() => json(403, { message: 'no', reason: 'forbidden' }));
    const client = new HeroesClient({ baseUrl: '/', request: server.request });
    await expect(client.events('/organization/workflow/events').next()).rejects.toMatchObject({
      status: 403,
      reason: 'forbidden'
    });
  });

  it('toEvent ignores data that is not a JSON object', () => {
    expect(toEvent({ event: '', data: '[1]', id: '' })).toBeNull();
    expect(toEvent({ event: '', data: '', id: '' })).toBeNull();
    expect(toEvent({ event: 'instance', data: '{"instance":"x"}', id: '' })).toEqual({
      type: 'instance',
      instance: 'x'
    });
  });
});
