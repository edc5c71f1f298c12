import { CSS, renderInstances } from '../render';
import { instanceRow } from '../states';

const now = Date.parse('2024-05-01T12:00:00Z');

describe('renderInstances', () => {
  it('renders live instances first with a state badge, details and steps', () => {
    const container = document.createElement('div');
    renderInstances(
      container,
      [
        instanceRow({ id: 'done', state: 'completed', template: 'sweep', updated: '2024-05-01T11:00:00Z' }),
        instanceRow({
          id: 'live',
          state: 'running',
          template: { name: 'heat', version: 1 },
          updated: '2024-05-01T11:58:00Z',
          jobs: [
            { step: 'prep', state: 'completed' },
            { step: 'solve', state: 'running' }
          ]
        })
      ],
      { now }
    );
    expect(container.querySelector(`.${CSS.summary}`)?.textContent).toBe(
      '1 running or waiting · 1 finished'
    );
    const items = [...container.querySelectorAll<HTMLElement>(`.${CSS.item}`)];
    expect(items.map(i => i.dataset.instance)).toEqual(['live', 'done']);
    const badge = items[0].querySelector(`.jp-heroes-instance-head .${CSS.badge}`)!;
    expect(badge.textContent).toBe('running');
    expect(badge.classList.contains('jp-heroes-state-running')).toBe(true);
    expect(items[0].querySelector(`.${CSS.detail}`)?.textContent).toBe('2 steps · 2 min ago');
    expect([...items[0].querySelectorAll('.jp-heroes-step-name')].map(n => n.textContent)).toEqual([
      'prep',
      'solve'
    ]);
    expect(items[1].querySelector(`.${CSS.badge}`)?.classList.contains('jp-heroes-state-success')).toBe(
      true
    );
  });

  it('says what to do when there is nothing', () => {
    const container = document.createElement('div');
    container.textContent = 'stale';
    renderInstances(container, []);
    expect(container.textContent).toMatch(/No workflows yet.*HEROES workflow/);
    expect(container.querySelector(`.${CSS.list}`)).toBeNull();
  });

  it('never parses API text as HTML', () => {
    const container = document.createElement('div');
    renderInstances(container, [
      instanceRow({ id: 'x', state: '<b>bad</b>', template: '<img src=x onerror=alert(1)>' })
    ]);
    expect(container.querySelector('img')).toBeNull();
    expect(container.querySelector('b')).toBeNull();
    expect(container.querySelector(`.${CSS.title}`)?.textContent).toBe('<img src=x onerror=alert(1)>');
  });

  it('offers Cancel only on live instances and reports which', () => {
    const container = document.createElement('div');
    const onCancel = jest.fn();
    renderInstances(
      container,
      [
        instanceRow({ id: 'q', state: 'queued' }),
        instanceRow({ id: 'c', state: 'cancelled' })
      ],
      { onCancel }
    );
    const buttons = container.querySelectorAll<HTMLButtonElement>(`.${CSS.cancel}`);
    expect(buttons.length).toBe(1);
    buttons[0].click();
    expect(onCancel).toHaveBeenCalledWith('q');
  });

  it('offers Results only on finished instances, whatever their end', () => {
    const container = document.createElement('div');
    const onResults = jest.fn();
    renderInstances(
      container,
      [
        instanceRow({ id: 'r', state: 'running' }),
        instanceRow({ id: 'ok', state: 'completed' }),
        instanceRow({ id: 'bad', state: 'failed' })
      ],
      { onResults }
    );
    const buttons = Array.from(container.querySelectorAll<HTMLButtonElement>(`.${CSS.results}`));
    expect(buttons.map(b => b.closest('li')?.dataset.instance).sort()).toEqual(['bad', 'ok']);
    expect(buttons[0].textContent).toBe('Results');
    buttons.forEach(b => b.click());
    expect(onResults.mock.calls.map(c => c[0]).sort()).toEqual(['bad', 'ok']);
    expect(container.querySelectorAll(`.${CSS.cancel}`).length).toBe(0); // no onCancel: no Cancel
  });
});
