/**
 * The notebook the launcher card "HEROES workflow" creates: it loads the HEROES IPython extension
 * and shows the submission widget (both in the Python package `jupyter_heroes`).
 */

/** The Python that shows the submission widget; the widget's contract with this extension. */
export const WIDGET_CODE = 'from jupyter_heroes.widgets import SubmissionWidget\n\nSubmissionWidget()';

/** The notebook's file name stem: heroes-workflow.ipynb, heroes-workflow-1.ipynb, ... */
export const NOTEBOOK_STEM = 'heroes-workflow';

/** nbformat 4.5 content of a new workflow notebook. */
export const WORKFLOW_NOTEBOOK = {
  cells: [
    {
      cell_type: 'markdown',
      id: 'heroes-intro',
      metadata: {},
      source:
        '# HEROES workflow\n' +
        '\n' +
        'Run the cells below (Shift+Enter), then pick a workflow template, fill in its parameters, ' +
        'compare where it can run (time to result, cost, energy, carbon) and submit.\n' +
        '\n' +
        'Your workflows and their states appear in the HEROES sidebar on the left.'
    },
    {
      cell_type: 'code',
      execution_count: null,
      id: 'heroes-load',
      metadata: {},
      outputs: [],
      source: '%load_ext jupyter_heroes'
    },
    {
      cell_type: 'code',
      execution_count: null,
      id: 'heroes-submit',
      metadata: {},
      outputs: [],
      source: WIDGET_CODE
    }
  ],
  metadata: {
    kernelspec: { display_name: 'Python 3 (ipykernel)', language: 'python', name: 'python3' },
    language_info: { name: 'python' }
  },
  nbformat: 4,
  nbformat_minor: 5
};

/** A fresh deep copy of the notebook content (the constant is never handed out). */
export function workflowNotebook(): typeof WORKFLOW_NOTEBOOK {
  return JSON.parse(JSON.stringify(WORKFLOW_NOTEBOOK));
}

/**
 * The first of `<dir>/heroes-workflow.ipynb`, `<dir>/heroes-workflow-1.ipynb`, ... for which
 * *exists* says false (tries *limit* names, then gives up with an Error).
 */
export async function uniqueNotebookPath(
  dir: string,
  exists: (path: string) => Promise<boolean>,
  limit = 100
): Promise<string> {
  const prefix = dir.replace(/^\/+|\/+$/g, '');
  for (let i = 0; i < limit; i++) {
    const name = i === 0 ? `${NOTEBOOK_STEM}.ipynb` : `${NOTEBOOK_STEM}-${i}.ipynb`;
    const path = prefix ? `${prefix}/${name}` : name;
    if (!(await exists(path))) {
      return path;
    }
  }
  throw new Error(
    `${limit} notebooks named ${NOTEBOOK_STEM}*.ipynb already exist in '${prefix || '/'}': ` +
      'rename or remove some, or open the launcher in another folder'
  );
}
