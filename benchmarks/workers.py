"""Worker subprocesses the benchmarks talk to one line at a time (timm's, and keras_vit's under other XLA_FLAGS)."""

import json
import subprocess


class LineWorker:
    """A subprocess that takes requests one line at a time on its stdin and answers each with one JSON
    object on a line of its stdout; other lines there (a library's chatter) are passed over.

    `stopped` is the error when the process ends instead, formatted with its exit `status`.
    """

    def __init__(self, argv, env, stopped):
        self.stopped = stopped
        self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)

    def reply(self):
        """The next JSON object the worker writes."""
        while True:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError(self.stopped.format(status=self.process.wait()))
            if line.startswith("{"):
                return json.loads(line)

    def ask(self, request):
        """Sends `request` (one line) and returns the reply."""
        self.process.stdin.write(request + "\n")
        self.process.stdin.flush()
        return self.reply()

    def close(self):
        self.process.stdin.close()
        self.process.wait(timeout=60)
