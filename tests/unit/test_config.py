import pytest

from shared.config import ConfigError, load


def test_local_defaults() -> None:
    cfg = load({})
    assert cfg.env == "local"
    assert cfg.project_id == "demo-yachay"
    assert cfg.cors_origins == ("http://localhost:3000",)
    assert cfg.auth_header == "Authorization"
    assert cfg.auth_emulator_host is None


def test_cors_origins_are_a_trimmed_list() -> None:
    cfg = load({"YACHAY_CORS_ORIGINS": " https://a.example , https://b.example,,"})
    assert cfg.cors_origins == ("https://a.example", "https://b.example")


@pytest.mark.parametrize(
    "variable",
    [
        "FIREBASE_AUTH_EMULATOR_HOST",
        "FIRESTORE_EMULATOR_HOST",
        "STORAGE_EMULATOR_HOST",
        "PUBSUB_EMULATOR_HOST",
        "YACHAY_TASKS_EMULATOR_HOST",
        "YACHAY_STRIPE_API_BASE",
    ],
)
def test_production_refuses_every_emulator_setting(variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        load({"YACHAY_ENV": "production", "GOOGLE_CLOUD_PROJECT": "p", variable: "127.0.0.1:1"})


def test_production_needs_a_project() -> None:
    with pytest.raises(ConfigError, match="GOOGLE_CLOUD_PROJECT"):
        load({"YACHAY_ENV": "production"})


def test_production_with_a_project_loads() -> None:
    cfg = load(
        {
            "YACHAY_ENV": "production",
            "GOOGLE_CLOUD_PROJECT": "yachay-prod",
            "YACHAY_AUTH_HEADER": "X-Forwarded-Authorization",
            "YACHAY_TASKS_SERVICE_ACCOUNT": "tasks@yachay-prod.iam.gserviceaccount.com",
            "YACHAY_SECRETS_KEY": "kms:projects/p/locations/l/keyRings/r/cryptoKeys/k",
        }
    )
    assert not cfg.is_local
    assert cfg.models_bucket == "yachay-prod-models"
    assert cfg.auth_header == "X-Forwarded-Authorization"


def test_unknown_env_is_refused() -> None:
    with pytest.raises(ConfigError, match="YACHAY_ENV"):
        load({"YACHAY_ENV": "staging"})


def test_production_seals_secrets_with_kms_only() -> None:
    base = {
        "YACHAY_ENV": "production",
        "GOOGLE_CLOUD_PROJECT": "yachay-prod",
        "YACHAY_TASKS_SERVICE_ACCOUNT": "tasks@yachay-prod.iam.gserviceaccount.com",
    }
    for key in (None, "", "local:/tmp/kek.bin"):
        env = base if key is None else {**base, "YACHAY_SECRETS_KEY": key}
        with pytest.raises(ConfigError, match="YACHAY_SECRETS_KEY must be kms:"):
            load(env)
