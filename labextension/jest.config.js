/**
 * Unit tests of the API client, the event-stream parser, the live updater and the rendering, with
 * ts-jest in jsdom. The tested modules import nothing from JupyterLab at run time, so no ESM
 * transformation of node_modules is needed.
 */
module.exports = {
  testEnvironment: 'jsdom',
  rootDir: __dirname,
  roots: ['<rootDir>/src'],
  testRegex: 'src/__tests__/.*\\.spec\\.ts$',
  transform: {
    '^.+\\.ts$': ['ts-jest', { tsconfig: '<rootDir>/tsconfig.test.json' }]
  },
  moduleFileExtensions: ['ts', 'js', 'json'],
  collectCoverageFrom: ['src/**/*.ts', '!src/index.ts', '!src/panel.ts', '!src/__tests__/**'],
  coverageReporters: ['text-summary']
};
