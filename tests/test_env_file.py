"""The env file (IMSIM_ENV_FILE) as python-dotenv reads it: export, quotes, escapes and comments; a line that is not
KEY=value, or an imsim name that is no setting, is one error naming the file and the line."""

from __future__ import annotations

import pytest

from imsim.errors import ConfigError
from imsim.settings import known_variables, load
from imsim.settings.sources import read_env_file


def test_the_env_file_reads_as_dotenv_does_and_names_the_line_it_cannot(tmp_path, monkeypatch):
    env = tmp_path / "imsim.env"
    env.write_text(
        "# written by the quickstart\n"
        'export IMSIM_QUEUE="my queue"\n'
        "IMSIM_CHUNK_SIZE=64   # inline comment after an unquoted value\n"
        "IMSIM_COLLECTION_PREFIX='pre'\n"
        "OTHER_TOOL=left alone\n"
        "\n"
    )
    read = read_env_file(env, set(known_variables()))
    assert read == {"IMSIM_QUEUE": "my queue", "IMSIM_CHUNK_SIZE": "64", "IMSIM_COLLECTION_PREFIX": "pre"}
    monkeypatch.setenv("IMSIM_ENV_FILE", str(env))
    monkeypatch.delenv("IMSIM_QUEUE", raising=False)
    monkeypatch.delenv("IMSIM_CHUNK_SIZE", raising=False)
    settings = load({"data_dir": tmp_path / "data"})
    assert (settings.queue, settings.chunk_size) == ("my queue", 64)

    env.write_text("IMSIM_QUEUE=a\nIMSIM_CHUNK_SIZ=64\n")
    with pytest.raises(
        ConfigError, match=r"imsim.env:2: IMSIM_CHUNK_SIZ is not an imsim setting \(did you mean IMSIM_CHUNK_SIZE\?\)"
    ):
        read_env_file(env, set(known_variables()))
    env.write_text("IMSIM_QUEUE=a\nthis is not a setting\n")
    with pytest.raises(ConfigError, match=r"imsim.env:2: not a KEY=value line"):
        read_env_file(env, set(known_variables()))
    assert read_env_file(tmp_path / "missing.env", set(known_variables())) == {}
