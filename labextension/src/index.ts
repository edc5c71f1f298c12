/**
 * Jupyter HEROES for JupyterLab 4: a sidebar of the user's workflow instances with live states, a
 * launcher card "HEROES workflow" that opens a notebook with the submission widget, and palette
 * commands. Every API call goes through the `jupyter_heroes` server extension
 * (`<base_url>/heroes/api/v1/...`), which forwards it to the HEROES service as the logged-in user.
 */
import {
  ILabShell,
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { ILauncher } from '@jupyterlab/launcher';
import { ServerConnection } from '@jupyterlab/services';
import { LabIcon } from '@jupyterlab/ui-components';

import { HeroesClient } from './api';
import { uniqueNotebookPath, workflowNotebook } from './notebook';
import { HeroesPanel } from './panel';

export * from './api';
export * from './states';

/** Command ids. */
export const CommandIDs = {
  openPanel: 'heroes:open-panel',
  refresh: 'heroes:refresh',
  newNotebook: 'heroes:new-workflow-notebook'
} as const;

const ICON_SVG =
  '<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">' +
  '<g class="jp-icon3" fill="#616161">' +
  '<path d="M12 1.5 21.1 6.75v10.5L12 22.5 2.9 17.25V6.75L12 1.5zm0 2.3L4.9 7.9v8.2l7.1 4.1 ' +
  '7.1-4.1V7.9L12 3.8z"/><path d="M8 7.5h2v3.5h4V7.5h2v9h-2V13h-4v3.5H8z"/></g></svg>';

export const heroesIcon = new LabIcon({ name: 'jupyter-heroes:heroes', svgstr: ICON_SVG });

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-heroes:plugin',
  description: 'HEROES workflows: sidebar, launcher card and commands.',
  autoStart: true,
  optional: [ILauncher, ICommandPalette, ILayoutRestorer, ILabShell],
  activate: (
    app: JupyterFrontEnd,
    launcher: ILauncher | null,
    palette: ICommandPalette | null,
    restorer: ILayoutRestorer | null,
    labShell: ILabShell | null
  ) => {
    const settings = ServerConnection.makeSettings();
    const client = new HeroesClient({
      baseUrl: settings.baseUrl,
      request: (url, init) => ServerConnection.makeRequest(url, init, settings)
    });
    const { commands, serviceManager } = app;

    const panel = new HeroesPanel({
      client,
      onNewNotebook: () => void commands.execute(CommandIDs.newNotebook),
      // show the copied results in the file browser (when JupyterLab has one)
      onResultsCopied: directory => {
        if (commands.hasCommand('filebrowser:go-to-path')) {
          void commands.execute('filebrowser:go-to-path', { path: directory });
        }
      }
    });
    panel.title.icon = heroesIcon;
    app.shell.add(panel, 'left', { rank: 600 });
    if (restorer) {
      restorer.add(panel, 'jupyter-heroes-panel');
    }

    commands.addCommand(CommandIDs.openPanel, {
      label: 'Open HEROES Workflows Panel',
      caption: 'Show your HEROES workflow instances and their states',
      icon: heroesIcon,
      execute: () => {
        if (labShell) {
          labShell.activateById(panel.id);
        } else {
          app.shell.activateById(panel.id);
        }
      }
    });

    commands.addCommand(CommandIDs.refresh, {
      label: 'Refresh HEROES Workflows',
      caption: 'Fetch the list of your workflow instances again',
      execute: () => panel.refresh()
    });

    commands.addCommand(CommandIDs.newNotebook, {
      label: args => (args['isLauncher'] ? 'HEROES workflow' : 'New HEROES Workflow Notebook'),
      caption: 'Open a notebook that submits a workflow to an HPC cluster',
      icon: heroesIcon,
      execute: async args => {
        const cwd = typeof args['cwd'] === 'string' ? args['cwd'] : '';
        const contents = serviceManager.contents;
        const path = await uniqueNotebookPath(cwd, async p => {
          try {
            await contents.get(p, { content: false });
            return true;
          } catch {
            return false;
          }
        });
        await contents.save(path, { type: 'notebook', format: 'json', content: workflowNotebook() });
        return commands.execute('docmanager:open', { path, factory: 'Notebook' });
      }
    });

    if (launcher) {
      launcher.add({
        command: CommandIDs.newNotebook,
        category: 'HEROES',
        rank: 0,
        args: { isLauncher: true }
      });
    }
    if (palette) {
      const category = 'HEROES';
      for (const command of Object.values(CommandIDs)) {
        palette.addItem({ command, category });
      }
    }
  }
};

export default plugin;
