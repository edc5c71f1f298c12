import { SSEParser } from '../sse';

describe('SSEParser', () => {
  it('joins multi-line data and resets fields after each message', () => {
    const p = new SSEParser();
    expect(p.feed('event: job\ndata: a\ndata: b\n\ndata: c\n\n')).toEqual([
      { event: 'job', data: 'a\nb', id: '' },
      { event: '', data: 'c', id: '' }
    ]);
  });

  it('handles CRLF split across chunks and lone CR line ends', () => {
    const p = new SSEParser();
    expect(p.feed('data: x\r')).toEqual([]);
    expect(p.feed('\n\r')).toEqual([]);
    // a CR at the very end may be half of CRLF: the message waits for the next chunk
    expect(p.feed('\ndata: y\r\r')).toEqual([{ event: '', data: 'x', id: '' }]);
    expect(p.feed('data: z\r\rdata')).toEqual([
      { event: '', data: 'y', id: '' },
      { event: '', data: 'z', id: '' }
    ]);
  });

  it('keeps the last id across messages and reports retry', () => {
    const p = new SSEParser();
    const [first, second] = p.feed('id: 7\nretry: 3000\ndata: a\n\ndata: b\n\n');
    expect(first).toEqual({ event: '', data: 'a', id: '7', retry: 3000 });
    expect(second).toEqual({ event: '', data: 'b', id: '7' });
    expect(p.lastEventId).toBe('7');
  });

  it('ignores comments, unknown fields, a bad retry and messages without data', () => {
    const p = new SSEParser();
    expect(p.feed(': ping\n\nfoo: bar\nretry: soon\n\nevent: x\n\n')).toEqual([]);
    expect(p.feed('data\n\n')).toEqual([{ event: '', data: '', id: '' }]);
  });

  it('keeps an incomplete message until its blank line arrives', () => {
    const p = new SSEParser();
    expect(p.feed('data: {"a":')).toEqual([]);
    expect(p.feed('1}\n')).toEqual([]);
    expect(p.feed('\n')).toEqual([{ event: '', data: '{"a":1}', id: '' }]);
  });
});
