/**
 * The HEROES sidebar: the caller's workflow instances in one organization, with live states.
 */
import { Widget } from '@lumino/widgets';
import { Message } from '@lumino/messaging';

import { HeroesApiError, HeroesClient, IOrganization, IResultsCopy } from './api';
import { ILiveStatus, LiveUpdater } from './live';
import { renderInstances } from './render';
import { instanceRow } from './states';

/** Where the chosen organization is remembered between sessions. */
export const ORG_STORAGE_KEY = 'jupyter-heroes:organization';

export interface IPanelOptions {
  client: HeroesClient;
  /** the "New workflow notebook" button */
  onNewNotebook: () => void;
  /** called with the folder (from the server's root) a workflow's results were copied into */
  onResultsCopied?: (directory: string) => void;
  /** asks the user to confirm a cancellation; default window.confirm */
  confirm?: (message: string) => Promise<boolean>;
  pollInterval?: number;
}

export class HeroesPanel extends Widget {
  constructor(options: IPanelOptions) {
    super();
    this.id = 'jupyter-heroes-panel';
    this.addClass('jp-heroes-panel');
    this.title.caption = 'HEROES workflows';
    this._client = options.client;
    this._confirm = options.confirm ?? (async m => window.confirm(m));
    this._onResultsCopied = options.onResultsCopied;

    const doc = this.node.ownerDocument;
    const header = doc.createElement('div');
    header.className = 'jp-heroes-header';
    const h = doc.createElement('h2');
    h.textContent = 'HEROES workflows';
    header.appendChild(h);

    const toolbar = doc.createElement('div');
    toolbar.className = 'jp-heroes-toolbar';
    this._orgSelect = doc.createElement('select');
    this._orgSelect.className = 'jp-heroes-org jp-mod-styled';
    this._orgSelect.title = 'Organization';
    this._orgSelect.addEventListener('change', () => this.selectOrganization(this._orgSelect.value));
    toolbar.appendChild(this._orgSelect);

    const refresh = doc.createElement('button');
    refresh.className = 'jp-heroes-refresh jp-mod-styled';
    refresh.type = 'button';
    refresh.textContent = 'Refresh';
    refresh.title = 'Fetch the workflow list again';
    refresh.addEventListener('click', () => void this.refresh());
    toolbar.appendChild(refresh);

    const create = doc.createElement('button');
    create.className = 'jp-heroes-new jp-mod-styled jp-mod-accept';
    create.type = 'button';
    create.textContent = 'New workflow';
    create.title = 'Open a notebook that submits a workflow';
    create.addEventListener('click', () => options.onNewNotebook());
    toolbar.appendChild(create);
    header.appendChild(toolbar);

    this._status = doc.createElement('p');
    this._status.className = 'jp-heroes-status';
    this._notice = doc.createElement('p');
    this._notice.className = 'jp-heroes-notice';
    this._notice.hidden = true;
    this._list = doc.createElement('div');
    this._list.className = 'jp-heroes-list';
    this.node.appendChild(header);
    this.node.appendChild(this._status);
    this.node.appendChild(this._notice);
    this.node.appendChild(this._list);

    this._updater = new LiveUpdater({
      client: this._client,
      pollInterval: options.pollInterval,
      onChange: () => this.render(),
      onStatus: status => this.showStatus(status)
    });
  }

  get updater(): LiveUpdater {
    return this._updater;
  }

  get organizations(): IOrganization[] {
    return this._orgs;
  }

  /** Fetch identity (first time) and the list now. */
  async refresh(): Promise<void> {
    if (!this._orgsLoaded) {
      await this.loadOrganizations();
      return;
    }
    await this._updater.refresh();
  }

  /** Act in organization *name* (remembered for the next session). */
  selectOrganization(name: string): void {
    this._client.organization = name || null;
    try {
      window.localStorage.setItem(ORG_STORAGE_KEY, name);
    } catch {
      // private browsing: not remembered
    }
    if (this.isVisible) {
      this._updater.restart();
    }
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    if (!this._orgsLoaded) {
      void this.loadOrganizations();
    } else {
      this._updater.start();
    }
  }

  protected onAfterHide(msg: Message): void {
    super.onAfterHide(msg);
    this._updater.stop(); // no polling for a hidden sidebar
  }

  dispose(): void {
    this._updater.stop();
    super.dispose();
  }

  private async loadOrganizations(): Promise<void> {
    this.showStatus({ mode: 'idle', message: 'Loading…' });
    let orgs: IOrganization[];
    try {
      const me = await this._client.me();
      orgs = (me.organizations ?? []).filter(o => o.kind !== 'platform');
      if (orgs.length === 0) {
        orgs = me.organizations ?? [];
      }
    } catch (err) {
      const error =
        err instanceof HeroesApiError ? err : new HeroesApiError(0, String(err), 'client_error');
      this.showStatus({ mode: 'error', message: error.message, error });
      return;
    }
    this._orgs = orgs;
    this._orgsLoaded = true;
    const doc = this.node.ownerDocument;
    this._orgSelect.textContent = '';
    for (const org of orgs) {
      const option = doc.createElement('option');
      option.value = org.name;
      option.textContent = org.display_name || org.name;
      this._orgSelect.appendChild(option);
    }
    this._orgSelect.hidden = orgs.length < 2;
    if (orgs.length === 0) {
      this.showStatus({
        mode: 'error',
        message:
          'You are not a member of any HEROES organization: ask your organization administrator to add you.'
      });
      return;
    }
    let remembered = '';
    try {
      remembered = window.localStorage.getItem(ORG_STORAGE_KEY) ?? '';
    } catch {
      remembered = '';
    }
    const chosen = orgs.find(o => o.name === remembered) ?? orgs[0];
    this._orgSelect.value = chosen.name;
    this._client.organization = chosen.name;
    if (this.isVisible) {
      this._updater.restart();
    }
  }

  private render(): void {
    renderInstances(this._list, this._updater.instances.map(instanceRow), {
      onCancel: id => void this.cancel(id),
      onResults: id => void this.copyResults(id)
    });
  }

  /** Copy workflow *id*'s outputs into `heroes-results/<id>/` and say what came. */
  async copyResults(id: string): Promise<void> {
    this.notify('busy', `Copying the results of ${id}…`);
    let copy: IResultsCopy;
    try {
      copy = await this._client.copyResults(id);
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      this.notify('error', `Copying the results of ${id} failed: ${message}`);
      return;
    }
    const got = copy.downloaded.length;
    const kept = copy.kept.length;
    const message =
      got + kept === 0
        ? `${id} has no outputs in your storage yet.`
        : `${got} file${got === 1 ? '' : 's'} copied into ${copy.directory}` +
          (kept ? ` (${kept} already there).` : '.');
    this.notify('done', message);
    if (got + kept > 0) {
      this._onResultsCopied?.(copy.directory);
    }
  }

  private async cancel(id: string): Promise<void> {
    if (!(await this._confirm(`Cancel workflow ${id}? Its running jobs are stopped.`))) {
      return;
    }
    try {
      await this._client.cancelInstance(id);
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      this.showStatus({ mode: 'error', message: `Cancelling ${id} failed: ${message}` });
      return;
    }
    await this._updater.refresh();
  }

  /** One line about the last action (results copied, or why not), beside the live status. */
  private notify(kind: 'busy' | 'done' | 'error', message: string): void {
    this._notice.hidden = false;
    this._notice.textContent = message;
    this._notice.dataset.kind = kind;
  }

  private showStatus(status: ILiveStatus): void {
    this._status.textContent = status.message;
    this._status.dataset.mode = status.mode;
  }

  private _client: HeroesClient;
  private _confirm: (message: string) => Promise<boolean>;
  private _onResultsCopied?: (directory: string) => void;
  private _updater: LiveUpdater;
  private _orgSelect: HTMLSelectElement;
  private _status: HTMLParagraphElement;
  private _notice: HTMLParagraphElement;
  private _list: HTMLDivElement;
  private _orgs: IOrganization[] = [];
  private _orgsLoaded = false;
}
