// Runs every test file: `node webapp/tests/index.js` works on any Node version. Node 20's
// `node --test webapp/tests/` searches the folder (and skips this file, whose name is no test
// pattern); Node 21+ treats a folder argument as a module and so lands here instead.
import './core.test.js';
import './protocol.test.js';
import './params.test.js';
import './worker_answers.test.js';
