/**
 * Evaluation of an empty split: a user error naming it, not an accuracy of 0 / 0 or a message about batches.
 */
import test from 'ava';
import { inMemoryDataset } from '../src/data/dataset.js';
import { evaluateModel } from '../src/train/evaluate.js';
import type { Model } from '../src/models/model.js';
import { UserError } from '../src/errors.js';

test('an empty split is a user error naming it', async (t) => {
  const empty = inMemoryDataset({ name: 'photos:val', classes: ['a', 'b'], pixels: new Uint8Array(0), labels: [], height: 8, width: 8 });
  const model = { numClasses: 2 } as unknown as Model;
  const err = await t.throwsAsync(evaluateModel(model, empty, { imageSize: 8 }), { instanceOf: UserError });
  t.is(err!.message, 'photos:val has no images to evaluate');
});
