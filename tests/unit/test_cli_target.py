"""Where azray points and with which key: options, environment, the azd environment, the local host."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from azray.keys import ClusterNotes, config_home, load_notes, save_notes, save_private_key
from azray.target import LOCAL_HOST_URL, Secret, Target, resolve_target

KEY = "s3cret-function-key"


def write_azd_environment(project: Path, values: dict[str, str], environment: str = "dev") -> None:
    (project / ".azure" / environment).mkdir(parents=True)
    (project / ".azure" / "config.json").write_text(json.dumps({"version": 1, "defaultEnvironment": environment}))
    lines = [f'{name}="{value}"' for name, value in values.items()]
    (project / ".azure" / environment / ".env").write_text("\n".join(lines) + "\n")


def fake_tool(folder: Path, name: str, script: str) -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)
    return path


AZD_VALUES = {
    "AZURE_ENV_NAME": "dev",
    "AZURE_RESOURCE_GROUP": "rg-dev",
    "CLUSTERS_RESOURCE_GROUP": "rg-dev-clusters",
    "FUNCTION_APP_NAME": "func-abc",
    "FUNCTION_APP_URL": "https://func-abc.azurewebsites.net",
    "clusterTokenKey": "never-read-by-azray",
}


@pytest.fixture
def no_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A PATH with neither azd nor az on it; fake ones can be put in the returned folder."""
    folder = tmp_path / "bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", str(folder))
    return folder


def test_url_option_wins_over_the_environment_and_azd(tmp_path, no_tools):
    write_azd_environment(tmp_path, AZD_VALUES)
    target = resolve_target("http://127.0.0.1:9000", None, {"AZRAY_URL": "http://127.0.0.1:9001"}, tmp_path)
    assert (target.base_url, target.url_source) == ("http://127.0.0.1:9000", "--url")


def test_environment_url_and_key_are_used_without_options(tmp_path, no_tools):
    target = resolve_target(None, None, {"AZRAY_URL": "http://127.0.0.1:9001", "AZRAY_KEY": KEY}, tmp_path)
    assert (target.base_url, target.url_source, target.key_source) == (
        "http://127.0.0.1:9001",
        "AZRAY_URL",
        "AZRAY_KEY",
    )
    assert target.key is not None
    assert target.key.reveal() == KEY


def test_key_option_wins_over_the_key_variable(tmp_path, no_tools):
    target = resolve_target(None, "from-option", {"AZRAY_KEY": KEY}, tmp_path)
    assert target.key is not None
    assert (target.key.reveal(), target.key_source) == ("from-option", "--key")


def test_without_anything_the_local_host_is_the_target_with_no_key(tmp_path, no_tools):
    target = resolve_target(None, None, {}, tmp_path)
    assert (target.base_url, target.key) == (LOCAL_HOST_URL, None)


@pytest.mark.parametrize("given", ["http://127.0.0.1:7071/api", "http://127.0.0.1:7071/api/", "http://127.0.0.1:7071/"])
def test_the_api_suffix_and_trailing_slash_name_the_same_app(tmp_path, no_tools, given):
    assert resolve_target(given, None, {}, tmp_path).api_url == "http://127.0.0.1:7071/api"


def test_a_url_that_is_not_http_is_refused_naming_where_it_came_from(tmp_path, no_tools):
    from azray.errors import CliError

    with pytest.raises(CliError, match="from AZRAY_URL"):
        resolve_target(None, None, {"AZRAY_URL": "ftp://x"}, tmp_path)


def test_azd_environment_files_give_the_url_when_azd_is_not_installed(tmp_path, no_tools):
    write_azd_environment(tmp_path, AZD_VALUES)
    subfolder = tmp_path / "examples"
    subfolder.mkdir()
    target = resolve_target(None, None, {}, subfolder)
    assert target.base_url == "https://func-abc.azurewebsites.net"
    assert "the azd environment 'dev'" in target.url_source
    assert "clusterTokenKey" not in target.azd_values


def test_azd_env_get_values_is_used_when_azd_is_installed(tmp_path, no_tools):
    values = {**AZD_VALUES, "FUNCTION_APP_URL": "https://func-from-azd.azurewebsites.net"}
    (tmp_path / ".azure").mkdir()
    fake_tool(no_tools, "azd", f"/bin/cat <<'JSON'\n{json.dumps(values)}\nJSON\n")
    target = resolve_target(None, None, {}, tmp_path)
    assert target.base_url == "https://func-from-azd.azurewebsites.net"
    assert "azd env get-values" in target.url_source


def test_the_azure_cli_gives_the_key_of_the_azd_app(tmp_path, no_tools):
    write_azd_environment(tmp_path, AZD_VALUES)
    arguments = tmp_path / "az-argv"
    fake_tool(no_tools, "az", f'echo "$@" > {arguments}\necho {KEY}\n')
    target = resolve_target(None, None, {}, tmp_path)
    assert target.key is not None
    assert target.key.reveal() == KEY
    assert target.key_source == "az functionapp keys list"
    assert "--name func-abc --resource-group rg-dev" in arguments.read_text()


def test_without_the_azure_cli_the_hint_says_how_to_set_the_key(tmp_path, no_tools):
    write_azd_environment(tmp_path, AZD_VALUES)
    target = resolve_target(None, None, {}, tmp_path)
    assert target.key is None
    assert "az functionapp keys list --name func-abc --resource-group rg-dev" in target.key_hint
    assert "AZRAY_KEY" in target.key_hint


def test_an_azure_folder_without_a_deployment_falls_back_to_the_local_host_and_says_why(tmp_path, no_tools):
    write_azd_environment(tmp_path, {"AZURE_ENV_NAME": "dev"})
    target = resolve_target(None, None, {}, tmp_path)
    assert target.base_url == LOCAL_HOST_URL
    assert "has no FUNCTION_APP_URL" in target.url_source


def test_a_secret_never_shows_in_repr_or_str():
    secret = Secret(KEY)
    target = Target("http://127.0.0.1:7071", "--url", secret, "--key")
    assert KEY not in f"{secret} {secret!r} {target} {target!r}"


# -- what azray keeps on the machine ---------------------------------------------------------------------------------


def test_config_home_honours_xdg_config_home(tmp_path):
    assert config_home({"XDG_CONFIG_HOME": str(tmp_path)}) == tmp_path / "azray"


def test_config_home_defaults_to_dot_config(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert config_home({}) == tmp_path / ".config" / "azray"


def test_a_private_key_is_written_0600_in_0700_folders_whatever_the_umask(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    previous = os.umask(0)
    try:
        path, replaced = save_private_key(Target("http://127.0.0.1:7071", "--url"), "demo", "KEY")
    finally:
        os.umask(previous)
    assert (stat.S_IMODE(path.stat().st_mode), stat.S_IMODE(path.parent.stat().st_mode)) == (0o600, 0o700)
    assert (path.read_text(), replaced) == ("KEY\n", False)


def test_keys_of_two_control_planes_keep_apart(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    first, _ = save_private_key(Target("http://127.0.0.1:7071", "--url"), "demo", "A")
    second, _ = save_private_key(Target("https://func-abc.azurewebsites.net", "--url"), "demo", "B")
    assert first != second
    assert (first.read_text(), second.read_text()) == ("A\n", "B\n")


def test_saving_a_key_again_replaces_it_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    target = Target("http://127.0.0.1:7071", "--url")
    save_private_key(target, "demo", "OLD")
    path, replaced = save_private_key(target, "demo", "NEW")
    assert (path.read_text(), replaced) == ("NEW\n", True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_notes_from_the_config_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    target = Target("http://127.0.0.1:7071", "--url")
    config = {"auth": {"ssh_user": "ray"}, "provider": {"ssh_allowed_cidrs": ["10.0.0.0/24"], "use_internal_ips": True}}
    save_notes(target, "demo", ClusterNotes.from_config(config))
    notes = load_notes(target, "demo")
    assert (notes.ssh_user, notes.ssh_allowed_cidrs, notes.use_internal_ips, notes.known) == (
        "ray",
        ("10.0.0.0/24",),
        True,
        True,
    )
