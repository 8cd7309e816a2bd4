import os
import subprocess
import sys
import textwrap

from memlib.source_hash import tree_hash


def test_a_file_edited_after_import_does_not_change_the_cache_key(tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    (code / "module.py").write_text("VALUE = 1\n")
    before = tree_hash(code)
    script = textwrap.dedent(f"""
        import memlib
        from pathlib import Path
        Path({str(code / 'module.py')!r}).write_text("VALUE = 2\\n")   # an edit while the process runs
        from memlib.cache import code_fingerprint
        print(code_fingerprint())
    """)
    env = dict(os.environ, MEMLIB_CODE_DIR=str(code))
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == before
    assert tree_hash(code) != before
