"""keras_fewshot.layers.memory: the LRUA cell against a numpy re-computation of its equations
(Santoro et al. 2016, sec. 3.1), usage decay, least-used zeroing, and serialization."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_fewshot.layers import LRUAMemoryCell

SMALL = {"units": 7, "memory_size": 8, "word_size": 5, "read_heads": 2, "gamma": 0.9}


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def np_softmax(x):
    z = np.exp(x - x.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def np_cosine(keys, memory, epsilon=1e-12):
    """[H, W], [S, W] -> [H, S]."""
    k = keys / np.sqrt(np.maximum((keys ** 2).sum(-1, keepdims=True), epsilon))
    m = memory / np.sqrt(np.maximum((memory ** 2).sum(-1, keepdims=True), epsilon))
    return k @ m.T


def perturbed_cell(seed, **config):
    """A built cell (inside keras.layers.RNN) with every weight moved off its initial value."""
    keras.utils.set_random_seed(seed)
    cell = LRUAMemoryCell(**{**SMALL, **config})
    rnn = keras.layers.RNN(cell, return_sequences=True, return_state=True)
    rnn.build((None, None, 6))
    rng = np.random.default_rng(seed)
    for w in rnn.weights:
        w.assign(w.numpy() + rng.normal(0.0, 0.5, w.shape).astype(np.float32))
    return cell, rnn


class NumpyLRUA:
    """One sequence through the cell's equations in float64, with the cell's weights, from
    the cell's initial state or from `states` (the cell's flat state vectors)."""

    def __init__(self, cell, states=None):
        self.cell = cell
        kernel, recurrent, bias = (w.numpy().astype(np.float64)
                                   for w in cell.controller.weights)
        self.lstm = kernel, recurrent, bias
        self.keys = [w.numpy().astype(np.float64) for w in cell.key_layer.weights]
        self.gates = [w.numpy().astype(np.float64) for w in cell.gate_layer.weights]
        self.strengths = ([w.numpy().astype(np.float64) for w in cell.strength_layer.weights]
                          if cell.key_strength else None)
        size, word, heads = cell.memory_size, cell.word_size, cell.read_heads
        if states is None:  # the paper's start: tiny constant memory, nothing read or used
            states = [np.zeros(cell.units), np.zeros(cell.units), np.full(size * word, 1e-6),
                      np.zeros(heads * word), np.zeros(heads * size), np.zeros(size)]
        states = [np.asarray(v, np.float64) for v in states]
        self.h, self.c = states[0], states[1]
        self.memory = states[2].reshape(size, word).copy()
        self.reads = states[3].reshape(heads, word)
        self.read_weights = states[4].reshape(heads, size)
        self.usage = states[5]

    def states(self):
        return [self.h, self.c, self.memory.ravel(), self.reads.ravel(),
                self.read_weights.ravel(), self.usage]

    def step(self, x):
        cell = self.cell
        kernel, recurrent, bias = self.lstm
        z = np.concatenate([x, self.reads.ravel()]) @ kernel + self.h @ recurrent + bias
        i, f, g, o = np.split(z, 4)  # Keras LSTM gate order
        self.c = sigmoid(f) * self.c + sigmoid(i) * np.tanh(g)
        self.h = sigmoid(o) * np.tanh(self.c)
        keys = np.tanh(self.h @ self.keys[0] + self.keys[1]).reshape(cell.read_heads, -1)
        gate = sigmoid(self.h @ self.gates[0] + self.gates[1])[:, None]  # sigma(alpha) [H, 1]
        similarity = np_cosine(keys, self.memory)  # addresses M_{t-1}
        if self.strengths is not None:  # beta = softplus(h W_b + b_b), one per head
            similarity *= np.log1p(np.exp(self.h @ self.strengths[0] + self.strengths[1]))[:, None]
        read_weights = np_softmax(similarity)
        self.reads = read_weights @ self.memory
        order = np.argsort(self.usage, kind="stable")  # ties: the lower index first
        least_used = np.zeros(cell.memory_size)
        least_used[order[:cell.read_heads]] = 1.0  # w_lu(t-1): the n = H smallest usages
        write_weights = gate * self.read_weights + (1 - gate) * least_used  # [H, S]
        self.memory[order[0]] = 0.0  # the least-used location is zeroed before writing
        for h in range(cell.read_heads):
            self.memory += np.outer(write_weights[h], keys[h])  # M_t(i) += w_w(t)(i) k_t
        self.read_weights = read_weights
        self.usage = (cell.gamma * self.usage + self.read_weights.sum(0)
                      + write_weights.sum(0))
        return np.concatenate([self.h, self.reads.ravel()])


def random_states(cell, batch, rng):
    """A state with no ties among usages or memory rows: [B, size] float32 arrays."""
    heads, size, word = cell.read_heads, cell.memory_size, cell.word_size
    read_weights = np_softmax(rng.normal(size=(batch, heads, size)))
    return [rng.normal(size=(batch, cell.units)), rng.normal(size=(batch, cell.units)),
            rng.normal(size=(batch, size * word)), rng.normal(size=(batch, heads * word)),
            read_weights.reshape(batch, -1), rng.uniform(0, 3, size=(batch, size))]


@pytest.mark.parametrize("config", [{}, {"read_heads": 1, "gamma": 0.5},
                                    {"read_heads": 3, "memory_size": 5},
                                    {"key_strength": True}])
def test_cell_follows_the_lrua_equations_over_several_steps(config):
    cell, rnn = perturbed_cell(3, **config)
    rng = np.random.default_rng(4)
    inputs = rng.normal(size=(3, 9, 6)).astype(np.float32)
    start = [v.astype(np.float32) for v in random_states(cell, 3, rng)]
    outputs, *states = (t.numpy() for t in rnn(inputs, initial_state=start))
    assert outputs.shape == (3, 9, cell.units + cell.read_heads * cell.word_size)
    for b in range(3):
        reference = NumpyLRUA(cell, [v[b] for v in start])
        expected = np.stack([reference.step(x) for x in inputs[b].astype(np.float64)])
        np.testing.assert_allclose(outputs[b], expected, rtol=1e-4, atol=1e-5)
        for name, actual, want in zip(("h", "c", "memory", "reads", "read_weights", "usage"),
                                      states, reference.states()):
            np.testing.assert_allclose(actual[b], want, rtol=1e-4, atol=1e-5, err_msg=name)


def test_cell_from_its_initial_state_follows_the_equations():
    """From the paper's start (memory 1e-6 everywhere, zero usage) untouched rows are equal,
    so which of two equal rows is least used is arbitrary: the outputs (which cannot tell
    equal rows apart) are compared."""
    cell, rnn = perturbed_cell(7)
    inputs = np.random.default_rng(8).normal(size=(2, 12, 6)).astype(np.float32)
    outputs = rnn(inputs)[0].numpy()
    for b in range(2):
        reference = NumpyLRUA(cell)
        expected = np.stack([reference.step(x) for x in inputs[b].astype(np.float64)])
        np.testing.assert_allclose(outputs[b], expected, rtol=1e-4, atol=1e-5)
    start = cell.get_initial_state(batch_size=2)
    for actual, want in zip(start, NumpyLRUA(cell).states()):
        np.testing.assert_array_equal(actual.numpy(), np.tile(want.astype(np.float32), (2, 1)))


def known_step_cell(gamma=0.5, gate_bias=0.3, key_bias=(0.5, -1.0, 2.0)):
    """A cell whose keys and write gates do not depend on the input: keys = tanh(key_bias)
    for both heads, sigma(alpha) = sigma(gate_bias)."""
    cell = LRUAMemoryCell(units=4, memory_size=6, word_size=3, read_heads=2, gamma=gamma)
    cell.build((None, 2))
    cell.key_layer.kernel.assign(np.zeros(cell.key_layer.kernel.shape, np.float32))
    cell.key_layer.bias.assign(np.tile(np.array(key_bias, np.float32), 2))
    cell.gate_layer.kernel.assign(np.zeros(cell.gate_layer.kernel.shape, np.float32))
    cell.gate_layer.bias.assign(np.full(2, gate_bias, np.float32))
    return cell


def one_step(cell, memory, read_weights, usage):
    """cell.call on one example with the given memory state -> (memory, read weights, usage)."""
    states = [tf.zeros([1, 4]), tf.zeros([1, 4]), tf.constant(memory.reshape(1, -1), tf.float32),
              tf.zeros([1, 6]), tf.constant(read_weights.reshape(1, -1), tf.float32),
              tf.constant(usage[None], tf.float32)]
    _, new = cell(tf.ones([1, 2]), states)
    return (new[2].numpy().reshape(memory.shape), new[4].numpy().reshape(read_weights.shape),
            new[5].numpy()[0])


def test_least_used_location_is_zeroed_then_written():
    cell = known_step_cell()
    rng = np.random.default_rng(0)
    memory = rng.normal(size=(6, 3)).astype(np.float32)
    usage = np.array([0.9, 0.4, 0.05, 1.3, 0.2, 0.7], np.float32)  # least used: 2, then 4
    read_weights = np_softmax(rng.normal(size=(2, 6)))
    new_memory, _, _ = one_step(cell, memory, read_weights, usage)
    key = np.tanh([0.5, -1.0, 2.0])
    gate = sigmoid(0.3)
    least_used = np.zeros(6)
    least_used[[2, 4]] = 1.0
    write = gate * read_weights + (1 - gate) * least_used  # [2, 6]
    expected = memory.astype(np.float64).copy()
    expected[2] = 0.0  # the old content of the least-used row is gone ...
    expected += np.outer(write.sum(0), key)  # ... and every row gets its written keys
    np.testing.assert_allclose(new_memory, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new_memory[2], write[:, 2].sum() * key, rtol=1e-5)
    # The second least-used row (4) is written to but keeps its content.
    np.testing.assert_allclose(new_memory[4], memory[4] + write[:, 4].sum() * key, rtol=1e-5)



def test_reads_address_the_memory_before_this_steps_write():
    """The row written this step holds k_t itself; the read must not find that echo."""
    cell = known_step_cell(gate_bias=-30.0)  # write k_t to the two least-used rows only
    rng = np.random.default_rng(3)
    memory = rng.normal(size=(6, 3)).astype(np.float32)
    usage = np.array([0.9, 0.4, 0.05, 1.3, 0.2, 0.7], np.float32)
    _, new_read_weights, _ = one_step(cell, memory, np_softmax(rng.normal(size=(2, 6))), usage)
    key = np.tanh([0.5, -1.0, 2.0])
    np.testing.assert_allclose(new_read_weights, np_softmax(np_cosine(np.stack([key, key]),
                                                                      memory)), rtol=1e-5)

@pytest.mark.parametrize("gamma", [0.0, 0.5, 0.95])
def test_usage_decays_by_gamma_and_adds_this_steps_reads_and_writes(gamma):
    cell = known_step_cell(gamma=gamma)
    rng = np.random.default_rng(1)
    memory = rng.normal(size=(6, 3)).astype(np.float32)
    usage = np.array([0.9, 0.4, 0.05, 1.3, 0.2, 0.7], np.float32)
    read_weights = np_softmax(rng.normal(size=(2, 6)))
    _, new_read_weights, new_usage = one_step(cell, memory, read_weights, usage)
    gate = sigmoid(0.3)
    least_used = np.isin(np.arange(6), [2, 4]).astype(np.float64)
    write = gate * read_weights + (1 - gate) * least_used
    np.testing.assert_allclose(new_usage, gamma * usage + new_read_weights.sum(0)
                               + write.sum(0), rtol=1e-5, atol=1e-6)
    # Each head reads with a distribution over the rows (sum 1) and writes sigma(alpha) to
    # its last read rows plus 1 - sigma(alpha) to each of the H = 2 least-used rows.
    np.testing.assert_allclose(new_read_weights.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(new_usage.sum() - gamma * usage.sum(),
                               2 * (1 + gate + 2 * (1 - gate)), rtol=1e-5)


def test_usage_of_rows_left_alone_decays_geometrically():
    """With the read weights peaked on row 0 (large keys matching it) the other rows' usage
    is multiplied by about gamma every step."""
    cell = known_step_cell(gamma=0.5, gate_bias=20.0, key_bias=(20.0, 20.0, 20.0))
    memory = np.full((6, 3), -1.0, np.float32)
    memory[0] = 1.0  # only row 0 points the way of the keys
    read_weights = np.zeros((2, 6))
    read_weights[:, 0] = 1.0
    usage = np.array([3.0, 4.0, 8.0, 16.0, 32.0, 64.0], np.float32)
    _, new_read_weights, new_usage = one_step(cell, memory, read_weights, usage)
    assert (new_read_weights[:, 1:] < 0.2).all()
    np.testing.assert_allclose(new_usage[3:], 0.5 * usage[3:], rtol=0.05)


def test_first_step_writes_to_the_first_locations():
    """All usages start equal (0): the least-used ties go to the lowest indices."""
    cell = known_step_cell(gate_bias=-30.0)  # sigma(alpha) ~ 0: write to least-used only
    memory = np.full((6, 3), 1e-6, np.float32)
    new_memory, _, _ = one_step(cell, memory, np.zeros((2, 6)), np.zeros(6, np.float32))
    key = np.tanh([0.5, -1.0, 2.0])
    np.testing.assert_allclose(new_memory[:2], [2 * key, 2 * key], rtol=1e-5)
    np.testing.assert_allclose(new_memory[2:], 1e-6, rtol=1e-5)


def test_more_read_heads_than_locations_is_refused():
    with pytest.raises(ValueError, match="read_heads .5. must not exceed memory_size .4."):
        LRUAMemoryCell(memory_size=4, read_heads=5)


def test_cell_round_trips_through_a_keras_file(tmp_path):
    _, rnn = perturbed_cell(5, key_strength=True)
    model = keras.Sequential([keras.Input((None, 6)), rnn])
    inputs = np.random.default_rng(6).normal(size=(2, 4, 6)).astype(np.float32)
    expected = [t.numpy() for t in model(inputs)]
    model.save(tmp_path / "cell.keras")
    loaded = keras.saving.load_model(tmp_path / "cell.keras", safe_mode=True)
    cell = loaded.layers[0].cell
    assert isinstance(cell, LRUAMemoryCell)
    assert {k: cell.get_config()[k] for k in SMALL} == SMALL
    assert cell.key_strength
    for a, e in zip(loaded(inputs), expected):
        np.testing.assert_array_equal(a.numpy(), e)
