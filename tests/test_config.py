"""The run config: layer precedence, unknown keys, value coercion and the errors a user sees."""

from __future__ import annotations

import pytest
import yaml

from sft_core.config import build_config, load_config_file, parse_override
from sft_core.errors import ConfigError

from helpers import invoke


@pytest.fixture(scope="module")
def spec(host):
    return host.get_task("classification")


def printed_config(host, *args) -> dict:
    result = invoke("run", "--print-config", *args, host=host)
    assert result.exit_code == 0, result.output
    return yaml.safe_load(result.stdout)


def error_of(host, *args) -> str:
    """The one-line error of a failing ``sft run --print-config``."""
    result = invoke("run", "--print-config", *args, host=host)
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def write(path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


# --- precedence ------------------------------------------------------------------------------

def test_precedence_defaults_files_overrides_options(host, tmp_path):
    first = write(tmp_path / "first.yaml", """
task: classification
model: from-first
output_dir: out-first
data: {eval: eval-first.tsv, train: train-first.tsv}
trainer: {lr: 1e-4, batch_size: 8, seed: 1, epochs: 2}
""")
    second = write(tmp_path / "second.yaml", """
model: from-second
output_dir: out-second
trainer:
  batch_size: 16
  seed: 2
""")
    config = printed_config(host, "--config", first, "--config", second, "trainer.seed=7", "model=from-override",
                            "output_dir=out-override", "data.train=train-override.tsv",
                            "--model", "from-option", "--train", "train-option.tsv")
    trainer = config["trainer"]
    assert trainer["eval_batch_size"] == 64  # dataclass default, untouched by any layer
    assert trainer["lr"] == 1e-4 and trainer["epochs"] == 2.0  # first file over the defaults
    assert trainer["batch_size"] == 16  # the later file wins
    assert trainer["seed"] == 7  # KEY=VALUE over both files
    assert config["output_dir"] == "out-override"  # KEY=VALUE over the files
    assert config["model"] == "from-option"  # click option over KEY=VALUE and files
    assert config["data"]["train"] == "train-option.tsv"  # --train over data.train=
    assert config["data"]["eval"] == "eval-first.tsv"  # --train leaves the rest of the data section alone
    assert config["task"] == "classification"


def test_defaults_without_any_layer(host):
    config = printed_config(host, "--task", "classification")
    assert config["model"] == "minilm"
    assert config["output_dir"] == "runs/classification"
    # the engine's default is 5e-5; the task's own defaults layer sits on top of it
    assert config["trainer"]["lr"] == 1e-4 and config["trainer"]["scheduler"] == "linear"
    assert config["trainer"]["batch_size"] == 32
    assert config["classification"] == {"problem_type": "auto", "threshold": 0.5, "long_text": "truncate",
                                        "head_tokens": 128, "window_stride": None, "pool": "mean",
                                        "class_weights": None, "first_token_last_layer": True}


def test_later_override_of_the_same_key_wins(host):
    assert printed_config(host, "--task", "classification", "trainer.lr=1e-3", "trainer.lr=2e-3")["trainer"]["lr"] == 2e-3


def test_build_config_layers_in_order(spec):
    config = build_config(spec, [("a", {"trainer": {"lr": 1.0, "seed": 3}}), ("b", {"trainer.lr": 2.0})])
    assert config.trainer.lr == 2.0 and config.trainer.seed == 3 and config.trainer.batch_size == 32


# --- unknown keys ----------------------------------------------------------------------------

def test_unknown_key_suggests_the_close_one(host):
    line = error_of(host, "--task", "classification", "trainer.lrr=3e-5")
    assert "unknown config key 'trainer.lrr'" in line
    assert "did you mean 'trainer.lr'" in line
    assert "override 'trainer.lrr=3e-5'" in line  # names where the key came from


def test_bare_field_name_suggests_its_section(spec):
    with pytest.raises(ConfigError, match=r"did you mean 'trainer.max_steps'"):
        build_config(spec, [("test", {"max_steps": 3})])


def test_unknown_section_lists_known_sections(spec):
    with pytest.raises(ConfigError, match=r"unknown config key 'zzz.qqq'; known sections: .*trainer.*classification"):
        build_config(spec, [("test", {"zzz": {"qqq": 1}})])


def test_unknown_key_in_a_config_file_names_the_file(host, tmp_path):
    path = write(tmp_path / "typo.yaml", "trainer:\n  batch_sise: 8\n")
    line = error_of(host, "--task", "classification", "--config", path)
    assert f"config file {path}" in line and "did you mean 'trainer.batch_size'" in line


def test_task_section_keys_are_checked(spec):
    assert build_config(spec, [("t", {"classification.problem_type": "regression"})]).options.problem_type == "regression"
    with pytest.raises(ConfigError, match=r"did you mean 'classification.problem_type'"):
        build_config(spec, [("t", {"classification.problem_typ": "regression"})])


# --- coercion --------------------------------------------------------------------------------

def test_yaml_scientific_string_becomes_float(host, tmp_path):
    assert yaml.safe_load("lr: 3e-5")["lr"] == "3e-5"  # the reason coercion exists
    path = write(tmp_path / "lr.yaml", "trainer:\n  lr: 3e-5\n")
    lr = printed_config(host, "--task", "classification", "--config", path)["trainer"]["lr"]
    assert isinstance(lr, float) and lr == 3e-05
    lr = printed_config(host, "--task", "classification", "trainer.lr=3e-5")["trainer"]["lr"]
    assert isinstance(lr, float) and lr == 3e-05


def test_int_field_rejects_text_naming_key_and_type(host):
    line = error_of(host, "--task", "classification", "trainer.max_steps=abc")
    assert "trainer.max_steps" in line and "'abc'" in line and "expected int or null" in line


@pytest.mark.parametrize("value, expected", [("7", 7), ("7.0", 7), ("1e3", 1000)])
def test_int_field_accepts_whole_numbers(spec, value, expected):
    got = build_config(spec, [("t", dict([parse_override(f"trainer.seed={value}")]))]).trainer.seed
    assert got == expected and type(got) is int


@pytest.mark.parametrize("value", ["7.5", "true"])
def test_int_field_rejects_fractions_and_bools(spec, value):
    with pytest.raises(ConfigError, match="invalid value for trainer.seed"):
        build_config(spec, [("t", dict([parse_override(f"trainer.seed={value}")]))])


def test_literal_choices(host, spec):
    assert printed_config(host, "--task", "classification", "trainer.scheduler=cosine")["trainer"]["scheduler"] == "cosine"
    line = error_of(host, "--task", "classification", "trainer.scheduler=cosin")
    assert "trainer.scheduler" in line and "one of 'linear', 'cosine', 'constant'" in line


def test_literal_no_survives_yaml_booleans(host, tmp_path):
    # YAML 1.1 reads a bare `no` as False; the choice "no" of mixed_precision must still be settable
    assert printed_config(host, "--task", "classification", "trainer.mixed_precision=no")["trainer"]["mixed_precision"] == "no"
    path = write(tmp_path / "mp.yaml", "trainer:\n  mixed_precision: no\n")
    assert printed_config(host, "--task", "classification", "--config", path)["trainer"]["mixed_precision"] == "no"
    error_of(host, "--task", "classification", "trainer.mixed_precision=yes")  # no choice spelled "yes"


@pytest.mark.parametrize("text, expected", [
    ("true", True), ("True", True), ("yes", True), ("on", True), ("1", True),
    ("false", False), ("no", False), ("off", False), ("0", False), ("FALSE", False),
])
def test_bool_parsing(spec, text, expected):
    config = build_config(spec, [("t", dict([parse_override(f"trainer.group_by_length={text}")]))])
    assert config.trainer.group_by_length is expected
    # the same words reach the field as strings, e.g. from a config written by another tool
    assert build_config(spec, [("t", {"trainer.group_by_length": text})]).trainer.group_by_length is expected


@pytest.mark.parametrize("text", ["maybe", "2"])
def test_bool_rejects_other_values(spec, text):
    with pytest.raises(ConfigError, match=r"invalid value for trainer.group_by_length.*expected bool"):
        build_config(spec, [("t", dict([parse_override(f"trainer.group_by_length={text}")]))])


@pytest.mark.parametrize("text", ["none", "None", "null", "~", ""])
def test_none_for_optional_fields(spec, text):
    config = build_config(spec, [("t", dict([parse_override(f"trainer.max_grad_norm={text}"),
                                             parse_override(f"data.header={text}")]))])
    assert config.trainer.max_grad_norm is None and config.data.header is None
    if text != "~":  # "~" means null only to the YAML parser; the others also as plain strings
        assert build_config(spec, [("t", {"trainer.max_steps": text})]).trainer.max_steps is None


def test_none_from_a_yaml_file(host, tmp_path):
    path = write(tmp_path / "null.yaml", "trainer:\n  max_grad_norm: null\n  max_steps: 5\n")
    trainer = printed_config(host, "--task", "classification", "--config", path)["trainer"]
    assert trainer["max_grad_norm"] is None and trainer["max_steps"] == 5


def test_none_for_required_field_is_an_error(spec):
    with pytest.raises(ConfigError, match=r"invalid value for trainer.lr: 'none' \(expected float\)"):
        build_config(spec, [("t", dict([parse_override("trainer.lr=none")]))])


def test_list_field_from_comma_text_or_yaml_list(spec):
    for text in ("a,b, c", "[a, b, c]"):
        assert build_config(spec, [("t", dict([parse_override(f"data.columns={text}")]))]).data.columns == ["a", "b", "c"]


def test_range_checks_after_coercion(spec):
    with pytest.raises(ConfigError, match="trainer.batch_size must be at least 1, got 0"):
        build_config(spec, [("t", {"trainer.batch_size": "0"})])
    with pytest.raises(ConfigError, match="trainer.lr must be positive"):
        build_config(spec, [("t", {"trainer.lr": "-1e-5"})])


@pytest.mark.parametrize("text, value", [
    ("data.text_column=#1 String", "#1 String"),   # a GLUE column name: YAML read it as a comment (null)
    ("data.text_column=review #2", "review #2"),   # YAML kept "review"
    ("data.text_column='#1 String'", "#1 String"),
    ("data.text_column=a#b", "a#b"),
    ("data.label_names=[a, '#b']", ["a", "#b"]),
])
def test_an_override_value_with_a_hash_is_kept_whole(text, value):
    assert parse_override(text) == (text.split("=")[0], value)


def test_override_without_equals_sign(host):
    line = error_of(host, "--task", "classification", "trainer.lr")
    assert "'trainer.lr' is not KEY=VALUE" in line


# --- config files ----------------------------------------------------------------------------

def test_invalid_yaml_names_file_and_line(host, tmp_path):
    path = write(tmp_path / "broken.yaml", "trainer:\n  lr: 1e-3\n  batch_size: [8, 16\n  seed: 3\n")
    line = error_of(host, "--task", "classification", "--config", path)
    assert f"config file {path} line " in line and "invalid YAML" in line
    line_number = int(line.split(" line ")[1].split(":")[0])
    assert 3 <= line_number <= 4, line  # the unclosed list opens on line 3; PyYAML notices on line 4


def test_invalid_yaml_tab_indent_line(tmp_path):
    path = write(tmp_path / "tabs.yaml", "task: classification\ntrainer:\n\tlr: 1e-3\n")
    with pytest.raises(ConfigError, match=rf"config file {path} line 3: invalid YAML"):
        load_config_file(path)


def test_missing_config_file(host, tmp_path):
    missing = tmp_path / "nowhere.yaml"
    assert error_of(host, "--task", "classification", "--config", str(missing)) == f"error: config file not found: {missing}"


def test_config_file_must_be_a_mapping(tmp_path):
    with pytest.raises(ConfigError, match="expected a mapping of keys to values, got list"):
        load_config_file(write(tmp_path / "list.yaml", "- trainer.lr\n- 3\n"))
    assert load_config_file(write(tmp_path / "empty.yaml", "# nothing yet\n")) == {}


# --- the task --------------------------------------------------------------------------------

def test_task_from_config_file(host, tmp_path):
    path = write(tmp_path / "task.yaml", "task: classification\ntrainer:\n  lr: 2e-5\n")
    config = printed_config(host, "--config", path)
    assert config["task"] == "classification" and config["trainer"]["lr"] == 2e-5


def test_unknown_task_from_config_file(host, tmp_path):
    path = write(tmp_path / "task.yaml", "task: sentiment\n")
    known = ", ".join(sorted(host.tasks))
    assert "classification" in known
    assert error_of(host, "--config", path) == f"error: unknown task 'sentiment'; known tasks: {known}"


def test_task_option_beats_config_file(host, tmp_path):
    path = write(tmp_path / "task.yaml", "task: sentiment\n")
    assert printed_config(host, "--config", path, "--task", "classification")["task"] == "classification"


def test_no_task_lists_known_tasks(host):
    line = error_of(host)
    assert line.startswith("error: no task given")
    assert line.endswith("known tasks: " + ", ".join(sorted(host.tasks)))
    assert "classification" in host.tasks


def test_every_value_knows_where_it_came_from(tmp_path):
    from sft_core.api import run_config

    path = write(tmp_path / "recipe.yaml", "trainer:\n  epochs: 5\n")
    config = run_config("instruct", config=[str(path)], overrides=["trainer.batch_size=4"])
    assert config.origin("trainer.max_length") == "defaults of task 'instruct'"
    assert config.origin("trainer.epochs") == f"config file {path}"
    assert config.origin("trainer.batch_size") == "override 'trainer.batch_size=4'"
    assert config.origin("trainer.seed") == "sft's default"
    assert config == run_config("instruct", config=[str(path)], overrides=["trainer.batch_size=4"])


def test_adapters_get_the_learning_rate_adapters_need():
    """peft.method=lora kept classification's full fine-tuning rate (1e-4): SmolLM2 + LoRA on 600
    SST-2 sentences reached 0.563. A default lr is scaled for adapters; a chosen one is kept."""
    from sft_core.api import run_config
    from sft_core.config import config_from_dict
    from sft_core.host.manager import PluginHost

    lora = run_config("classification", overrides=["peft.method=lora"])
    assert lora.trainer.lr == pytest.approx(1e-3)
    assert lora.origin("trainer.lr") == "the task's default 0.0001 x peft.lr_scale 10 for adapters"
    assert run_config("classification").trainer.lr == pytest.approx(1e-4)  # full fine-tuning: unchanged
    assert run_config("classification", overrides=["peft.method=lora", "trainer.lr=3e-4"]).trainer.lr == 3e-4
    assert run_config("classification", overrides=["peft.method=lora", "peft.lr_scale=4"]).trainer.lr == 4e-4
    assert run_config("instruct").trainer.lr == pytest.approx(5e-4)  # the task's default is LoRA
    assert run_config("instruct", overrides=["peft.method=none"]).trainer.lr == pytest.approx(5e-5)
    # the saved config.yaml trains the same run: its lr is not scaled a second time
    again = config_from_dict(PluginHost().get_task("classification"), lora.to_dict())
    assert again.trainer.lr == pytest.approx(1e-3) and again.trainer.min_steps == lora.trainer.min_steps
    with pytest.raises(ConfigError, match="peft.lr_scale must be positive"):
        run_config("classification", overrides=["peft.lr_scale=0"])


def test_the_small_data_rule_applies_to_a_length_left_at_its_default(tmp_path):
    from sft_core.api import run_config
    from sft_core.config import SMALL_DATA_STEPS

    config = run_config("classification")
    assert config.trainer.min_steps == SMALL_DATA_STEPS
    assert config.origin("trainer.min_steps") == "sft's small-data rule"
    for chosen in (["trainer.epochs=1"], ["trainer.max_steps=5"]):
        off = run_config("classification", overrides=chosen)
        assert off.trainer.min_steps == 0, chosen
        assert off.origin("trainer.min_steps") == "sft's small-data rule, off: you set the length of training"
    recipe = write(tmp_path / "recipe.yaml", "trainer:\n  epochs: 2\n")
    assert run_config("classification", config=[str(recipe)]).trainer.min_steps == 0  # a config file sets it too
    assert run_config("classification", overrides=["trainer.epochs=1", "trainer.min_steps=30"]).trainer.min_steps == 30
