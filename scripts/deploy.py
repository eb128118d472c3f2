"""Deploy (or update) the app on a running Ray cluster: `serve deploy` with per-model revisions.

    python -m scripts.deploy [--config serve_config.yaml] [--address http://127.0.0.1:8265] [--dry-run]

Ray Serve rebuilds an application only when serve_config.yaml itself changes, and a rebuild
restarts every deployment. This command renders the config with an override per model deployment
whose `ray_actor_options` carry the entry's revision (a hash of the entry and its weights' size
and mtime): after an edit of models.json, Ray restarts only the changed models' replicas (old
replicas finish their in-flight streams first), every other model keeps serving, and the ingress
re-reads the changed entries. Adding or removing a model changes `args.model_set`, and new code
(any change under serve_app/, deployments/ or core/) changes `args.code_revision`: both rebuild the
whole app, replica by replica.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from scripts.app_args import app_args
from scripts.run_server import ROOT, server_env


def render(source: Path, revision: str | None = None) -> dict:
    from core.settings import Settings
    from deployments.model_source import ModelSource
    from serve_app.builder import deployment_name, model_actor_options
    from serve_app.ops.reload_audit import config_revision

    config = yaml.safe_load(source.read_text())
    app = config["applications"][0]
    args = app.setdefault("args", {})
    settings = Settings(**{k.lower(): v for k, v in args.items()})
    os.chdir(source.parent if source.parent != Path("") else ROOT)  # relative paths as `serve deploy` sees them
    models_path = settings.resolve(settings.model_config_path)
    model_source = ModelSource(models_path, settings.resolve(settings.model_cache_dir))
    models = model_source.read().models
    revisions = model_source.revisions(models)
    # The cluster builds from the file these revisions come from: MODEL_CONFIG_PATH of this shell
    # (as given, so it resolves on the head node as here) unless the config names one.
    args.update(app_args(args.get("model_config_path", settings.model_config_path), models, revision))
    overrides = [
        {"name": deployment_name(name),
         "ray_actor_options": model_actor_options(entry, model_source.footprint(entry), revisions[name])}
        for name, entry in models.items()
    ]
    # The ingress records each reload in the audit log: by this command, with the config's revision.
    overrides.append({"name": "ingress", "user_config": {"revisions": revisions, "deployed_by": "scripts.deploy",
                                                        "config_revision": config_revision(revisions)}})
    app["deployments"] = overrides
    return config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "serve_config.yaml")
    parser.add_argument("--address", default=os.environ.get("RAY_DASHBOARD_ADDRESS", "http://127.0.0.1:8265"),
                        help="The Ray dashboard of the cluster (RAY_DASHBOARD_ADDRESS).")
    parser.add_argument("--dry-run", action="store_true", help="Print the rendered config, deploy nothing.")
    parser.add_argument("--code-revision", help="Rebuild the whole app as new code does (default: a hash of "
                        "serve_app/ and deployments/); e.g. after new dependencies, or in scripts.update_drill.")
    options = parser.parse_args(argv)
    rendered = yaml.safe_dump(render(options.config.resolve(), options.code_revision), sort_keys=False)
    if options.dry_run:
        print(rendered)
        return 0
    fd, name = tempfile.mkstemp(prefix="aicore-deploy-", suffix=".yaml")
    with os.fdopen(fd, "w") as f:
        f.write(rendered)
    serve = Path(sys.executable).parent / "serve"
    # The CLI sends Ray's token (RAY_AUTH_TOKEN, or ~/.ray/auth_token) only in token mode, which a
    # cluster started by scripts.run_server or the multi-node guide always is.
    env = server_env({"RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "token")})
    return subprocess.call([str(serve), "deploy", name, "--address", options.address], env=env)


if __name__ == "__main__":
    sys.exit(main())
