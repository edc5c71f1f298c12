/**
 * An incremental parser of `text/event-stream` (Server-Sent Events, as the WHATWG HTML standard
 * describes them): feed it text as it arrives, in chunks cut anywhere, and get whole messages back.
 *
 * The event stream is read with `fetch` (through `ServerConnection.makeRequest`) rather than
 * `EventSource`, so that it carries the same authorization as every other request to the server.
 */

export interface ISSEMessage {
  /** the `event:` field; '' when absent (the standard's default type "message") */
  event: string;
  /** the `data:` lines joined with '\n' */
  data: string;
  /** the last `id:` seen on the stream */
  id: string;
  /** the `retry:` the server asked for, in ms, if this message set one */
  retry?: number;
}

export class SSEParser {
  /** Parse *chunk* and return the messages it completes. */
  feed(chunk: string): ISSEMessage[] {
    this._buffer += chunk;
    const messages: ISSEMessage[] = [];
    for (;;) {
      const match = /\r\n|\r|\n/.exec(this._buffer);
      if (!match) {
        break;
      }
      // a lone '\r' at the end may be the first half of '\r\n': wait for the next chunk
      if (match[0] === '\r' && match.index === this._buffer.length - 1) {
        break;
      }
      const line = this._buffer.slice(0, match.index);
      this._buffer = this._buffer.slice(match.index + match[0].length);
      const message = this.line(line);
      if (message) {
        messages.push(message);
      }
    }
    return messages;
  }

  /** The id of the last event, to send as `Last-Event-ID` when reconnecting. */
  get lastEventId(): string {
    return this._lastId;
  }

  private line(line: string): ISSEMessage | null {
    if (line === '') {
      return this.dispatch();
    }
    if (line.startsWith(':')) {
      return null; // a comment: keep-alive
    }
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) {
      value = value.slice(1);
    }
    switch (field) {
      case 'event':
        this._event = value;
        break;
      case 'data':
        this._data.push(value);
        break;
      case 'id':
        if (!value.includes('\0')) {
          this._lastId = value;
        }
        break;
      case 'retry':
        if (/^\d+$/.test(value)) {
          this._retry = parseInt(value, 10);
        }
        break;
      default:
        break; // unknown fields are ignored
    }
    return null;
  }

  private dispatch(): ISSEMessage | null {
    const hasData = this._data.length > 0;
    const message: ISSEMessage = {
      event: this._event,
      data: this._data.join('\n'),
      id: this._lastId
    };
    if (this._retry !== undefined) {
      message.retry = this._retry;
    }
    this._event = '';
    this._data = [];
    this._retry = undefined;
    return hasData ? message : null;
  }

  private _buffer = '';
  private _event = '';
  private _data: string[] = [];
  private _lastId = '';
  private _retry: number | undefined = undefined;
}
