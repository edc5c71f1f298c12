/**
 * DOM rendering of the sidebar's instance list (plain DOM, so it is unit-tested in jsdom).
 * Text always goes in through `textContent`: nothing from the API is parsed as HTML.
 */
import { IInstanceRow, age, sortRows, summarize } from './states';

export const CSS = {
  list: 'jp-heroes-instances',
  item: 'jp-heroes-instance',
  title: 'jp-heroes-instance-title',
  detail: 'jp-heroes-instance-detail',
  badge: 'jp-heroes-state',
  steps: 'jp-heroes-steps',
  cancel: 'jp-heroes-cancel',
  results: 'jp-heroes-results',
  empty: 'jp-heroes-empty',
  summary: 'jp-heroes-summary'
} as const;

export interface IRenderOptions {
  /** for relative times; default Date.now() */
  now?: number;
  /** called when the user asks to cancel a live instance; no button when absent */
  onCancel?: (id: string) => void;
  /** called when the user asks for a finished instance's results; no button when absent */
  onResults?: (id: string) => void;
}

function el<K extends keyof HTMLElementTagNameMap>(
  doc: Document,
  tag: K,
  className: string,
  text?: string
): HTMLElementTagNameMap[K] {
  const node = doc.createElement(tag);
  node.className = className;
  if (text !== undefined) {
    node.textContent = text;
  }
  return node;
}

/** A state badge: `<span class="jp-heroes-state jp-heroes-state-<kind>" title=help>label</span>`. */
export function stateBadge(doc: Document, state: IInstanceRow['state']): HTMLSpanElement {
  const badge = el(doc, 'span', `${CSS.badge} ${CSS.badge}-${state.kind}`, state.label);
  badge.title = state.help;
  return badge;
}

/** Replace the content of *container* with the list of *rows* (sorted: live first). */
export function renderInstances(
  container: HTMLElement,
  rows: IInstanceRow[],
  options: IRenderOptions = {}
): void {
  const doc = container.ownerDocument;
  const now = options.now ?? Date.now();
  container.textContent = '';
  if (rows.length === 0) {
    container.appendChild(
      el(
        doc,
        'p',
        CSS.empty,
        'No workflows yet. Open the launcher and choose "HEROES workflow" to submit one.'
      )
    );
    return;
  }
  const counts = summarize(rows);
  const parts = [`${counts.live} running or waiting`, `${counts.finished} finished`];
  if (counts.failed) {
    parts.push(`${counts.failed} failed`);
  }
  container.appendChild(el(doc, 'p', CSS.summary, parts.join(' · ')));

  const list = el(doc, 'ul', CSS.list);
  for (const row of sortRows(rows)) {
    const item = el(doc, 'li', CSS.item);
    item.dataset.instance = row.id;
    item.dataset.state = row.state.label;

    const head = el(doc, 'div', 'jp-heroes-instance-head');
    const title = el(doc, 'span', CSS.title, row.title);
    title.title = `instance ${row.id}`;
    head.appendChild(title);
    head.appendChild(stateBadge(doc, row.state));
    item.appendChild(head);

    const when = age(row.updated, now);
    const detail = [row.detail, when].filter(Boolean).join(' · ');
    if (detail) {
      item.appendChild(el(doc, 'div', CSS.detail, detail));
    }
    if (row.steps.length > 1 || (row.steps.length === 1 && !row.state.final)) {
      const steps = el(doc, 'ul', CSS.steps);
      for (const step of row.steps) {
        const li = el(doc, 'li', 'jp-heroes-step');
        li.appendChild(el(doc, 'span', 'jp-heroes-step-name', step.name));
        li.appendChild(stateBadge(doc, step.state));
        steps.appendChild(li);
      }
      item.appendChild(steps);
    }
    if (options.onCancel && !row.state.final) {
      const button = el(doc, 'button', `${CSS.cancel} jp-mod-styled jp-mod-warn`, 'Cancel');
      button.type = 'button';
      button.title = `Cancel workflow ${row.id}`;
      const onCancel = options.onCancel;
      button.addEventListener('click', () => onCancel(row.id));
      item.appendChild(button);
    }
    if (options.onResults && row.state.final) {
      const button = el(doc, 'button', `${CSS.results} jp-mod-styled`, 'Results');
      button.type = 'button';
      button.title = `Copy the outputs of workflow ${row.id} into heroes-results/${row.id}/`;
      const onResults = options.onResults;
      button.addEventListener('click', () => onResults(row.id));
      item.appendChild(button);
    }
    list.appendChild(item);
  }
  container.appendChild(list);
}
