"""Attack the public API: generated bad values at every argument of every public entry point.

Each case is (entry point, argument, kind): hypothesis draws a value that is bad for the kind
(wrong type, out of range, NaN, inf, huge, an array of the wrong shape...), calls the entry
point with every other argument valid, and asserts a ValueError or TypeError whose message
names the argument, and that nothing was changed: the model's parameters, the optimizer's
state and the files in the working folder are as before. Counted in CASES (printed by
test_the_attack_covers_every_entry_point).
"""
import math
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minidl
from minidl import MLP, SGD, Adam, EarlyStopping, ReduceLROnPlateau, evaluate, fit
from minidl.callbacks import ModelCheckpoint
from minidl.data import load_dataset
from minidl.gradcheck import check_gradients
from minidl.schedules import CosineAnnealingLR, ExponentialLR, LinearLR, StepLR

pytestmark = pytest.mark.timeout(300)

NOT_NUMBERS = st.sampled_from([None, "3", "abc", ["x"], {"a": 1}, 1 + 2j, object(), b"1"])
NON_FINITE = st.sampled_from([math.nan, -math.nan, math.inf, -math.inf, np.float64("nan")])


def _valid_names():
    """Every name some choice argument accepts: a generated 'bad' name must be none of them."""
    from minidl.data import DATASETS
    from minidl.layers import ACTIVATIONS
    from minidl.losses import ALIASES, LOSSES
    from minidl.model import INIT_CHOICES
    from minidl.parallel import SYNC_MODES
    return {*DATASETS, *ACTIVATIONS, *LOSSES, *ALIASES, *INIT_CHOICES, *SYNC_MODES, "auto", "min", "max",
            "val_loss"}


VALID_NAMES = _valid_names()


def _a_valid_name(text):
    """Whether some choice argument accepts ``text``: a listed name or a float32/64 dtype spelling."""
    if text in VALID_NAMES:
        return True
    try:
        return np.dtype(text).name in ("float32", "float64")
    except Exception:        # np.dtype raises TypeError, ValueError, even SyntaxError
        return False


def _bad(kind):
    """A strategy of values that are bad for an argument of ``kind``."""
    ints = {
        "count": st.integers(max_value=-1),                    # int >= 0
        "positive_int": st.integers(max_value=0),             # int >= 1
    }
    if kind in ints:
        return st.one_of(ints[kind], st.floats(allow_nan=True).filter(lambda v: v != int(v) if math.isfinite(v) else True),
                         NOT_NUMBERS, st.booleans(), NON_FINITE)
    reals = {
        "non_negative": st.floats(max_value=-1e-300),
        "positive": st.floats(max_value=0.0),
        "unit_open": st.one_of(st.floats(max_value=0.0), st.floats(min_value=1.0)),       # (0, 1)
        "unit_right_open": st.one_of(st.floats(max_value=-1e-300), st.floats(min_value=1.0)),   # [0, 1)
        "unit_left_open": st.one_of(st.floats(max_value=0.0), st.floats(min_value=1.0 + 1e-12)),   # (0, 1]
        "real": st.nothing(),
    }
    if kind in reals:
        return st.one_of(reals[kind].filter(math.isfinite), NOT_NUMBERS, NON_FINITE)
    if kind == "choice":
        return st.one_of(st.text(max_size=6).filter(lambda t: not _a_valid_name(t)),
                         st.integers(), NOT_NUMBERS.filter(lambda v: not isinstance(v, str)))
    if kind == "name":                      # a non-empty string
        return st.one_of(st.just(""), st.integers(), NOT_NUMBERS.filter(lambda v: not isinstance(v, str)))
    if kind.startswith("optional_"):        # None is fine: everything else that is bad for the kind
        return _bad(kind[len("optional_"):]).filter(lambda v: v is not None)
    if kind in ("read_path", "write_path"):  # relative to the test's empty working folder
        return st.sampled_from([3, None, b"x" if kind == "write_path" else 2.5, ".", "afile/model.npz",
                                "missing.npz" if kind == "read_path" else "afile/x/y.npz"])
    if kind == "flag":
        return st.one_of(st.integers(), st.text(max_size=3), st.floats(allow_nan=True), st.none())
    if kind == "X":
        return st.one_of(
            st.sampled_from([None, "abc", [[1, 2]], np.ones(3 * 4), np.ones((4, 2)), np.ones((4, 3, 1)),
                             np.zeros((0, 3)), np.array([["a", "b", "c"]] * 4), np.full((4, 3), np.nan),
                             np.full((4, 3), np.inf), np.ones((4, 3), dtype=complex), np.ones((4, 3), dtype=bool),
                             np.array([[1, 2, None]] * 4, dtype=object)]))
    if kind == "labels":
        return st.sampled_from([None, "abc", np.array([0, 1, 2, 5]), np.array([0, 1, -1, 0]), np.ones((4, 2)),
                                np.array([0.5, 1, 0, 1]), np.array([0, 1]), np.array([0, 1, np.nan, 1]),
                                np.array([0, 1, 2, 0], dtype=complex)])
    if kind == "callbacks":
        return st.sampled_from(["abc", 3, [3], [None], [object()], {"a": 1}, [EarlyStopping, "x"]])
    if kind == "validation_data":
        return st.sampled_from(["abc", 3, (np.ones((2, 3)),), (np.ones((2, 4)), np.array([0, 1])),
                                (np.ones((2, 3)), np.array([0, 7])), (np.ones((2, 3)), np.array([0])),
                                [np.ones((2, 3)), np.array([0, 1]), 3]])
    raise AssertionError(kind)


def _model(dtype="float64"):
    return MLP([3, 4, 3], dtype=dtype, seed=1)


def _data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((4, 3)), np.array([0, 1, 2, 1])


def _fit(**kwargs):
    model = _model()
    X, y = _data()
    arguments = dict(model=model, loss="cross_entropy", optimizer=SGD(model, lr=0.1), X=X, y=y, epochs=1,
                     batch_size=2, verbose=0, comm=None)
    arguments.update(kwargs)
    return arguments["model"], lambda: fit(**arguments)


def _call(function, **defaults):
    """A case builder: the model it changes (or None) and the call with ``kwargs`` applied."""
    def build(**kwargs):
        model = _model()
        arguments = dict(defaults)
        arguments.update(kwargs)
        return model, lambda: function(model, **arguments)
    return build


def _fresh(function, **defaults):
    """A case builder for a call that takes no model."""
    def build(**kwargs):
        arguments = dict(defaults)
        arguments.update(kwargs)
        return None, lambda: function(**arguments)
    return build


X4, Y4 = _data()
CASES = {   # entry point -> builder, {argument: (kind, the name its message must contain)}
    "MLP": (_fresh(MLP, sizes=[3, 4, 3]), {
        "sizes": ("X", "sizes"), "activation": ("choice", "activation"), "dtype": ("choice", "dtype"),
        "seed": ("count", "seed"), "init": ("choice", "init"), "negative_slope": ("real", "negative_slope")}),
    "SGD": (_call(SGD, lr=0.1), {
        "lr": ("non_negative", "lr"), "momentum": ("non_negative", "momentum"), "dampening": ("real", "dampening"),
        "weight_decay": ("non_negative", "weight_decay"), "nesterov": ("flag", "nesterov")}),
    "Adam": (_call(Adam), {
        "lr": ("non_negative", "lr"), "eps": ("non_negative", "eps"), "weight_decay": ("non_negative", "weight_decay"),
        "betas": ("X", "betas")}),
    "EarlyStopping": (_fresh(EarlyStopping), {
        "monitor": ("name", "monitor"), "mode": ("choice", "mode"), "min_delta": ("real", "min_delta"),
        "patience": ("count", "patience"), "baseline": ("optional_real", "baseline"),
        "restore_best_weights": ("flag", "restore_best_weights"), "start_from_epoch": ("count", "start_from_epoch"),
        "check_finite": ("flag", "check_finite")}),
    "ReduceLROnPlateau": (_fresh(ReduceLROnPlateau), {
        "factor": ("unit_open", "factor"), "patience": ("count", "patience"), "mode": ("choice", "mode"),
        "min_delta": ("real", "min_delta"), "cooldown": ("count", "cooldown"), "min_lr": ("non_negative", "min_lr")}),
    "StepLR": (lambda **kw: (None, lambda: StepLR(SGD(_model(), lr=0.1), **{"step_size": 2, **kw})), {
        "step_size": ("positive_int", "step_size"), "gamma": ("non_negative", "gamma")}),
    "ExponentialLR": (lambda **kw: (None, lambda: ExponentialLR(SGD(_model(), lr=0.1), **{"gamma": 0.9, **kw})), {
        "gamma": ("non_negative", "gamma")}),
    "CosineAnnealingLR": (lambda **kw: (None, lambda: CosineAnnealingLR(SGD(_model(), lr=0.1), **{"T_max": 3, **kw})), {
        "T_max": ("positive_int", "T_max"), "eta_min": ("non_negative", "eta_min")}),
    "LinearLR": (lambda **kw: (None, lambda: LinearLR(SGD(_model(), lr=0.1), **kw)), {
        "start_factor": ("unit_left_open", "start_factor"), "total_iters": ("count", "total_iters")}),
    "fit": (_fit, {
        "X": ("X", "X"), "y": ("labels", "y"), "epochs": ("count", "epochs"), "batch_size": ("positive_int", "batch_size"),
        "validation_split": ("unit_right_open", "validation_split"), "seed": ("count", "seed"),
        "check_every_steps": ("optional_positive_int", "check_every_steps"), "sync_every": ("positive_int", "sync_every"),
        "callbacks": ("callbacks", "callbacks"), "validation_data": ("validation_data", "validation_data"),
        "loss": ("choice", "loss"), "sync": ("choice", "sync")}),
    "evaluate": (_call(evaluate, X=X4, y=Y4), {
        "X": ("X", "X"), "y": ("labels", "y"), "batch_size": ("positive_int", "batch_size"), "loss": ("choice", "loss")}),
    "MLP.predict": (lambda **kw: (None, lambda: _model().predict(**{"X": X4, **kw})), {
        "X": ("X", "X"), "batch_size": ("positive_int", "batch_size")}),
    "check_gradients": (_call(check_gradients, X=X4, y=Y4), {
        "X": ("X", "X"), "y": ("labels", "y"), "eps": ("positive", "eps"), "loss": ("choice", "loss")}),
    "load_dataset": (_fresh(load_dataset, name="xor", xor_points=40), {
        "name": ("choice", "dataset"), "seed": ("count", "seed"), "val_fraction": ("unit_open", "val_fraction"),
        "test_fraction": ("unit_open", "test_fraction"), "xor_points": ("positive_int", "xor_points")}),
    "MLP.save": (lambda **kw: (None, lambda: _model().save(**kw)), {"path": ("write_path", "path")}),
    "minidl.load": (lambda **kw: (None, lambda: minidl.load(**kw)), {"path": ("read_path", "path")}),
    "MLP.predict_proba": (lambda **kw: (None, lambda: _model().predict_proba(**{"X": X4, **kw})), {
        "X": ("X", "X"), "loss": ("optional_choice", "loss"), "batch_size": ("positive_int", "batch_size")}),
    "ModelCheckpoint": (_fresh(ModelCheckpoint, path="model.npz"), {
        "monitor": ("name", "monitor"), "mode": ("choice", "mode")}),
}
PAIRS = [(entry, argument) for entry, (_, arguments) in CASES.items() for argument in arguments]


def _snapshot(model):
    return None if model is None else [p.copy() for p in model.params]


@pytest.mark.parametrize("entry, argument", PAIRS, ids=[f"{e}-{a}" for e, a in PAIRS])
def test_bad_values_are_refused_by_name_and_change_nothing(entry, argument, tmp_path, monkeypatch):
    builder, arguments = CASES[entry]
    kind, name = arguments[argument]
    monkeypatch.chdir(tmp_path)
    files_before = ["afile"] if kind.endswith("_path") else []
    if files_before:
        (tmp_path / "afile").write_text("a file where a folder is needed")
    strategy = _bad(kind)
    if kind in ("real", "optional_real"):    # any real is fine: only non-numbers and non-finite are bad
        strategy = st.one_of(NOT_NUMBERS, NON_FINITE).filter(lambda v: v is not None or kind == "real")

    @settings(max_examples=50)
    @given(value=strategy)
    def attack(value):
        model, call = builder(**{argument: value})
        before = _snapshot(model)
        with pytest.raises((ValueError, TypeError)) as caught:
            call()
        message = str(caught.value)
        named = value.split("/")[0] if kind.endswith("_path") and isinstance(value, str) else name
        assert named in message, f"{entry}({argument}={value!r}) raised {message!r}, which does not name {named!r}"
        assert "Traceback" not in message
        if model is not None:
            assert all(np.array_equal(a, b) for a, b in zip(before, model.params)), "parameters changed"
        assert sorted(os.listdir(tmp_path)) == files_before, f"files left behind: {os.listdir(tmp_path)}"

    attack()


def test_float32_model_names_inputs_that_overflow_it():
    model = MLP([3, 4, 3], dtype="float32", seed=1)
    X, y = _data()
    X[0, 0] = 1e39                            # finite in float64, inf in float32
    for call in (lambda: fit(model, "cross_entropy", SGD(model, lr=0.1), X, y, epochs=1, batch_size=2, verbose=0),
                 lambda: evaluate(model, X, y), lambda: model.predict(X)):
        with pytest.raises(ValueError, match=r"X.*float32"):
            call()


def test_the_attack_covers_every_entry_point():
    """Every public name that takes user values is in CASES (a new one must be added)."""
    attacked = set(CASES)
    public = {"MLP", "SGD", "Adam", "EarlyStopping", "ReduceLROnPlateau", "fit", "evaluate", "check_gradients",
              "StepLR", "ExponentialLR", "CosineAnnealingLR", "LinearLR", "ModelCheckpoint"}
    assert public <= attacked
    assert all(hasattr(minidl, name) for name in public), [name for name in public if not hasattr(minidl, name)]
    print(f"{len(PAIRS)} (entry point, argument) pairs attacked, 50 generated values each")


@pytest.mark.parametrize("checkpoint, error, match", [
    (".", ValueError, "is a folder"), (3, TypeError, "file path"), ("afile/ckpt.npz", ValueError, "cannot write"),
])
def test_fit_refuses_a_checkpoint_path_it_could_not_write_before_any_work(tmp_path, monkeypatch, checkpoint, error,
                                                                           match):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    model, call = _fit(checkpoint=checkpoint)
    before = _snapshot(model)
    with pytest.raises(error, match=match):
        call()
    assert all(np.array_equal(a, b) for a, b in zip(before, model.params))
    assert sorted(os.listdir(tmp_path)) == ["afile"]


JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-3, 10**12), st.floats(allow_nan=True), st.text(max_size=3))
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=6)
HISTORY_RECORDS = st.fixed_dictionaries({"epoch": JSON_VALUES, "loss": JSON_VALUES},
                                        optional={key: JSON_VALUES for key in ("step", "val_loss", "lr", "accuracy")})
HISTORY_FACTS = ("best_epoch", "stopped_epoch", "best_check", "stopped_check", "steps_per_epoch", "stop_reason")


@settings(max_examples=60)
@given(document=st.one_of(JSON_VALUES, st.fixed_dictionaries(
    {"records": st.lists(HISTORY_RECORDS, max_size=4)}, optional={key: JSON_VALUES for key in HISTORY_FACTS})))
def test_plot_of_any_json_document_is_a_plot_or_a_value_error(tmp_path_factory, document):
    """`minidl plot` reads a history.json someone may have edited: whatever JSON it holds, the
    result is a PNG or a ValueError (one line at the command line), never another exception."""
    import json
    from minidl.plot import plot_history, read_run_history
    folder = tmp_path_factory.mktemp("history")
    path = folder / "history.json"
    path.write_text(json.dumps(document))
    try:
        records, facts = read_run_history(str(path))
        plot_history(records, str(folder / "curves.png"), **facts)
    except ValueError:
        return
    assert (folder / "curves.png").stat().st_size > 0
