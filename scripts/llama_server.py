"""A llama.cpp llama-server for the reference scripts (make-gguf-references.py,
make-gemma-references.py): started on a port, waited for, asked, stopped."""
import contextlib, json, os, subprocess, time, urllib.request


class LlamaServer:
    def __init__(self, port):
        self.port = port

    def post(self, path, body):
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=300) as r:
            return json.loads(r.read())

    def tokenize(self, text, add_special=False):
        return self.post("/tokenize", {"content": text, "add_special": add_special})["tokens"]

    def greedy(self, prompt_ids, n):
        """`n` greedy tokens after `prompt_ids`, end-of-generation banned (ignore_eos), no cache."""
        return self.post("/completion", {"prompt": prompt_ids, "n_predict": n, "temperature": 0, "top_k": 1, "samplers": ["top_k"],
                                         "ignore_eos": True, "cache_prompt": False, "return_tokens": True, "seed": 0})


@contextlib.contextmanager
def llama_server(binary, model, flags, port, env=None):
    proc = subprocess.Popen([binary, "-m", str(model), *flags, "--port", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, **(env or {})})
    try:
        for _ in range(240):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except Exception:
                time.sleep(0.5)
        yield LlamaServer(port)
    finally:
        proc.terminate()
        proc.wait()
