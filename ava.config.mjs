// Tests are TypeScript compiled by `npm run build` into dist/. ZOO_TEST_DIR points ava at another
// build directory (a second checkout building into .build-<name>/, for example).
const root = process.env.ZOO_TEST_DIR ?? 'dist';
export default {
  files: [`${root}/test/**/*.test.js`],
  // Each test file in its own process: the wasm heap and its worker threads are per process.
  workerThreads: false,
  concurrency: 2,
  timeout: '10m',
  verbose: true,
};
