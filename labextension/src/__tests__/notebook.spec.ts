import { WIDGET_CODE, WORKFLOW_NOTEBOOK, uniqueNotebookPath, workflowNotebook } from '../notebook';

describe('the workflow notebook', () => {
  it('is nbformat 4.5 with unique cell ids, loading the extension then showing the widget', () => {
    const nb = workflowNotebook();
    expect(nb.nbformat).toBe(4);
    expect(nb.nbformat_minor).toBe(5);
    const ids = nb.cells.map(c => c.id);
    expect(new Set(ids).size).toBe(ids.length);
    const code = nb.cells.filter(c => c.cell_type === 'code').map(c => c.source);
    expect(code).toEqual(['%load_ext jupyter_heroes', WIDGET_CODE]);
    expect(nb.metadata.kernelspec.name).toBe('python3');
    for (const cell of nb.cells.filter(c => c.cell_type === 'code')) {
      expect(cell).toMatchObject({ outputs: [], execution_count: null });
    }
  });

  it('hands out copies: editing one leaves the constant alone', () => {
    const nb = workflowNotebook();
    nb.cells[1].source = 'changed';
    expect(WORKFLOW_NOTEBOOK.cells[1].source).toBe('%load_ext jupyter_heroes');
  });
});

describe('uniqueNotebookPath', () => {
  it('picks the first free name in the folder', async () => {
    const taken = new Set(['work/heroes-workflow.ipynb', 'work/heroes-workflow-1.ipynb']);
    expect(await uniqueNotebookPath('/work/', async p => taken.has(p))).toBe(
      'work/heroes-workflow-2.ipynb'
    );
    expect(await uniqueNotebookPath('', async () => false)).toBe('heroes-workflow.ipynb');
  });

  it('gives up with a message after the limit', async () => {
    await expect(uniqueNotebookPath('d', async () => true, 3)).rejects.toThrow(
      /3 notebooks named heroes-workflow\*\.ipynb already exist in 'd'/
    );
  });
});
