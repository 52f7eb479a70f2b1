"""docs/signing.md's Node.js example, extracted from the document and run
against a real node: the recipe other languages follow is the one the docs
show."""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import ubcluster  # noqa: E402

BIN = os.environ["MEMBERSHIPD"]
DOC = os.path.join(ubcluster.SRC, "docs", "signing.md")


class NodeExample(unittest.TestCase):
    @unittest.skipUnless(shutil.which("node"), "node is not installed")
    def test_node_example_from_docs(self):
        with open(DOC) as f:
            blocks = re.findall(r"```js\n(.*?)```", f.read(), re.S)
        self.assertEqual(len(blocks), 1, "docs/signing.md has one js block")
        c = ubcluster.Cluster(BIN, n=1)
        tmp = tempfile.mkdtemp(prefix="unibus-sign-")
        try:
            c.start()
            c.wait_leader()
            c.admin()
            script = os.path.join(tmp, "sign.mjs")
            with open(script, "w") as f:
                f.write(blocks[0])
            env = dict(os.environ, UNIBUS_URL="http://127.0.0.1:%d" % c.nodes[0].http_port,
                       UNIBUS_HANDLE="admin",
                       UNIBUS_SEED_FILE=os.path.join(c.nodes[0].data, "admin.nk"),
                       ROOM="docs-room")
            p = subprocess.run(["node", script], env=env, capture_output=True,
                               text=True, timeout=60)
            self.assertEqual(p.returncode, 0, p.stderr)
            lines = [json.loads(x) for x in p.stdout.splitlines()]
            self.assertEqual(lines[0], [200, lines[0][1]])
            self.assertEqual(lines[0][1]["handle"], "admin")
            self.assertEqual(lines[1][0], 201)
            self.assertEqual(lines[1][1]["name"], "docs-room")
            # The server saw it: the room exists.
            st, j = c.nodes[0].request("GET", "/v1/rooms/docs-room")
            self.assertEqual(st, 200)
        finally:
            c.close()
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    unittest.main(verbosity=2)
