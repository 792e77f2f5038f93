"""Per-kind configs: one flat shape, a class per kind chosen by ``kind``, the model's own part."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, Field, ValidationError

from detector import KINDS, DetectorConfig, TrainingConfig, create_detector, stored_config
from detector.config import KIND_CONFIGS, CVAEDetectorConfig, VAEDetectorConfig
from detector.models import REGISTRY, AEConfig, CVAEConfig, VAEConfig

ROOT = Path(__file__).resolve().parents[2]


class Holder(BaseModel):
    """A service-style schema with a config field."""

    config: DetectorConfig = Field(default_factory=DetectorConfig)


def test_every_kind_has_one_config_class_next_to_its_model() -> None:
    assert set(KIND_CONFIGS) == set(REGISTRY) == set(KINDS)
    for kind, flat in KIND_CONFIGS.items():
        own = REGISTRY[kind].config_class
        assert issubclass(flat, own) and issubclass(flat, DetectorConfig)
        assert own.__module__ == REGISTRY[kind].__module__  # defined beside the model
        assert flat.model_fields["kind"].default == kind == REGISTRY[kind].kind


def test_construction_and_validation_pick_the_kind() -> None:
    vae = DetectorConfig(kind="vae", window=64, beta=2)  # type: ignore[call-arg]
    assert type(vae) is VAEDetectorConfig and isinstance(vae, DetectorConfig)
    assert vae.beta == 2 and vae.window == 64
    assert type(DetectorConfig()).__name__ == "AEDetectorConfig"  # default kind: ae
    flat = {"kind": "cvae", "window": 16, "condition_on": ["hour"], "training": {"seed": 3}}
    cvae = DetectorConfig.model_validate(flat)
    assert type(cvae) is CVAEDetectorConfig and cvae.training.seed == 3
    assert DetectorConfig.model_validate_json('{"kind": "vae", "beta": 3}').kind == "vae"
    # the flat JSON shape round-trips and only holds the kind's own options
    dumped = cvae.model_dump(mode="json")
    assert dumped["condition_on"] == ["hour"] and "beta" in dumped and "prior_std" not in dumped
    assert DetectorConfig.model_validate(dumped) == cvae
    assert create_detector(dumped).config == cvae
    assert create_detector(None).config.kind == "ae"


def test_a_config_field_of_another_model_validates_and_serialises_per_kind() -> None:
    holder = Holder.model_validate({"config": {"kind": "aae", "prior_std": 2.5}})
    assert holder.config.kind == "aae"
    assert holder.model_dump()["config"]["prior_std"] == 2.5  # not cut to the shared fields
    assert Holder().model_dump(mode="json")["config"]["kind"] == "ae"
    schema = Holder.model_json_schema()
    assert "AAEDetectorConfig" in schema["$defs"] and "CVAEDetectorConfig" in schema["$defs"]
    assert "beta" not in schema["$defs"]["AEDetectorConfig"]["properties"]


def _errors(payload: Any) -> list[dict[str, Any]]:
    with pytest.raises(ValidationError) as info:
        Holder.model_validate({"config": payload})
    return info.value.errors()  # type: ignore[return-value]


def test_an_option_of_another_kind_is_refused_by_name() -> None:
    (error,) = _errors({"kind": "ae", "beta": 5})
    assert error["loc"] == ("config", "beta")
    assert error["msg"] == "beta is not an option of kind ae; it is an option of vae, cvae"
    errors = _errors({"kind": "vae", "prior_std": 3, "condition_on": ["key"]})
    assert {e["loc"] for e in errors} == {("config", "prior_std"), ("config", "condition_on")}
    assert "aae" in errors[0]["msg"] + errors[1]["msg"]
    # errors keep the field's own location (no kind tag in it), unknown fields stay "extra"
    (error,) = _errors({"kind": "vae", "beta": -1})
    assert error["loc"] == ("config", "beta") and "greater than or equal" in error["msg"]
    (error,) = _errors({"kind": "ae", "windw": 3})
    assert error["loc"] == ("config", "windw") and error["type"] == "extra_forbidden"
    (error,) = _errors({"kind": "gan"})
    assert error["loc"] == ("config", "kind") and "choose one of ae, vae, aae, cvae" in error["msg"]
    (error,) = _errors(["not", "a", "dict"])
    assert error["loc"][0] == "config"
    with pytest.raises(ValidationError, match="key_column"):
        DetectorConfig.model_validate({"kind": "cvae", "condition_on": ["key"]})
    with pytest.raises(ValidationError, match="at least one condition"):
        DetectorConfig.model_validate({"kind": "cvae", "condition_on": []})


def test_the_model_receives_only_its_own_config() -> None:
    cfg = DetectorConfig.model_validate(
        {"kind": "vae", "beta": 0.5, "hidden_dims": [8], "training": {"max_epochs": 1}}
    )
    network = cfg.network
    assert type(network) is VAEConfig and network.beta == 0.5 and network.hidden_dims == [8]
    assert set(type(network).model_fields) == {
        "kind",
        "hidden_dims",
        "latent_dim",
        "dropout",
        "beta",
        "score_samples",
    }
    assert type(DetectorConfig().network) is AEConfig
    cvae = DetectorConfig.model_validate(
        {"kind": "cvae", "condition_on": ["key"], "key_column": "k"}
    )
    assert isinstance(cvae.network, CVAEConfig) and "key_column" not in CVAEConfig.model_fields


def test_a_kind_sets_its_own_training_defaults_and_given_fields_win() -> None:
    own = dict(AEConfig.training_defaults)
    shared = TrainingConfig()
    assert own and all(getattr(shared, name) != value for name, value in own.items())
    ae = DetectorConfig()
    assert {name: getattr(ae.training, name) for name in own} == own
    # the kinds without their own keep the shared schedule
    assert DetectorConfig(kind="vae").training == shared
    # a field given, in a mapping or a TrainingConfig, wins; the others keep the kind's
    partial = DetectorConfig.model_validate({"kind": "ae", "training": {"batch_size": 32}})
    assert partial.training.batch_size == 32
    assert partial.training.learning_rate == own["learning_rate"]
    given = DetectorConfig(kind="ae", training=TrainingConfig(learning_rate=1e-3))
    assert given.training.learning_rate == 1e-3
    assert given.training.max_epochs == own["max_epochs"]
    # what is stored reads back as it was written, whatever the kind's defaults are
    assert stored_config(given.model_dump(mode="json")) == given
    described = DetectorConfig.model_json_schema()["$defs"]["AEDetectorConfig"]
    assert (
        "ae: learning_rate 0.002, max_epochs 30"
        in described["properties"]["training"]["description"]
    )


def test_stored_configs_of_the_one_class_shape_still_read() -> None:
    # earlier versions wrote every kind's options into every config (and ignored the others)
    old_ae = {
        "format_version": 1,
        "kind": "ae",
        "window": 16,
        "hidden_dims": [8],
        "beta": 1.0,
        "score_samples": 0,
        "prior_std": 1.0,
        "adversarial_weight": 1.0,
        "condition_on": ["auto"],
        "key_column": None,
    }
    cfg = stored_config(old_ae)
    assert cfg.kind == "ae" and cfg.window == 16 and "beta" not in cfg.model_dump()
    assert stored_config({**old_ae, "kind": "vae", "beta": 2.0}).beta == 2.0  # type: ignore[attr-defined]
    with pytest.raises(ValidationError, match="window"):
        stored_config({**old_ae, "window": 1})  # the rest is validated as strictly as ever
    with pytest.raises(ValidationError, match="extra"):
        stored_config({**old_ae, "windw": 3})
    with pytest.raises(ValidationError, match="kind"):
        stored_config({"kind": "gan"})


def test_no_kind_name_checks_outside_the_models() -> None:
    names = "|".join(KINDS)
    check = re.compile(rf"""(?<!dtype\.)kind\s*(==|!=|in|not in)\s*.*["']({names})["']""")
    offenders = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in (ROOT / "detector").rglob("*.py")
        if "models" not in path.parts
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if check.search(line)
    ]
    assert not offenders, offenders
