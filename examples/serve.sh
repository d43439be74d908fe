#!/usr/bin/env bash
# The whole pipeline, then the vectors behind an OpenAI-compatible API (docs/serving.md):
# scan -> bank -> search -> eval -> report (examples/lib.sh), then
# `stv serve-local --vectors $OUT/<task>.safetensors --port $PORT &`, wait until /health
# answers, list the model ids (GET /v1/models: the bare model first, then one id per
# vectors file), ask one chat completion of the bare model and one with the vectors,
# and stop the server. The two answers are saved as $OUT/serve-bare.json and
# $OUT/serve-vectors.json.
#
#     bash examples/serve.sh                                          # VizWiz, Idefics2
#     IMAGE=photo.jpg QUESTION="What is this? Answer:" bash examples/serve.sh
#     TASK=okvqa MODEL=qwen-vl PORT=8100 bash examples/serve.sh
#
#   TASK       vizwiz okvqa flowers cub dtd (others need DATA)                    [vizwiz]
#   PORT       the server's port (loopback only)                                    [8000]
#   IMAGE      an image file sent with the question (none: a text-only question)   [none]
#   QUESTION   the user message's text                         [What is this? Answer:]
#   MAX_TOKENS tokens generated per answer                                          [16]
#   WAIT_S     seconds to wait for the server to load the model                     [600]
#   STV_API_KEY  if set, the server requires it and the requests send it
# and lib.sh's variables (paper's settings by default). After examples/<task>.sh with the
# same settings, scan, bank, search (and MTV's search) reuse its WORKSPACE's artifacts;
# the evaluations run again.
set -euo pipefail

TASK=${TASK:-vizwiz}
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PORT=${PORT:-8000}
IMAGE=${IMAGE:-}
QUESTION=${QUESTION:-What is this? Answer:}
MAX_TOKENS=${MAX_TOKENS:-16}
WAIT_S=${WAIT_S:-600}
URL=http://127.0.0.1:$PORT

stv_pipeline
if [[ $DRY_RUN == 1 ]]; then exit 0; fi

# Start the server in the background; stop it however this script ends.
read -r -a stv <<< "$STV"
ARGS=(--vectors "$VECTORS" --port "$PORT")
_opt --device "$DEVICE"; _opt --dtype "$DTYPE"; _flag --trust-remote-code "$TRUST_REMOTE_CODE"
echo "$(stv_show "${stv[@]}" serve-local "${ARGS[@]}") &"
"${stv[@]}" serve-local "${ARGS[@]}" &      # the server itself is the background job
server=$!
stop_server() {
    if kill -0 "$server" 2>/dev/null; then
        kill "$server"          # SIGTERM: the server shuts down cleanly
        wait "$server" || true
        echo "== server stopped"
    fi
}
trap stop_server EXIT
trap 'exit 130' INT TERM       # so that Ctrl-C or a kill stops the server too

auth=()
if [[ -n ${STV_API_KEY:-} ]]; then auth=(-H "Authorization: Bearer $STV_API_KEY"); fi

# Wait until it answers (loading the model takes a while); give up if it exits.
echo "== waiting for $URL/health"
for ((waited = 0; ; waited++)); do
    if curl -sf "$URL/health" > /dev/null; then break; fi
    if ! kill -0 "$server" 2>/dev/null; then echo "serve.sh: the server exited" >&2; exit 1; fi
    if ((waited >= WAIT_S)); then echo "serve.sh: no answer from $URL after ${WAIT_S}s" >&2; exit 1; fi
    sleep 1
done

# GET /v1/models: {"data": [{"id": "<model>"}, {"id": "<model>+<task>@<digest>"}]}
models=$(curl -sf "${auth[@]}" "$URL/v1/models")
mapfile -t ids < <(python3 -c 'import json, sys
for model in json.load(sys.stdin)["data"]: print(model["id"])' <<< "$models")
echo "== models: ${ids[*]}"
if [[ ${#ids[@]} -lt 2 ]]; then
    echo "serve.sh: /v1/models should list the bare model and the vectors: $models" >&2
    exit 1
fi
bare=${ids[0]}
tuned=${ids[1]}

# One chat completion: the image (a data URL) then the question, greedy (temperature 0).
ask() {  # ask MODEL_ID OUTPUT_FILE
    python3 - "$1" "$QUESTION" "$IMAGE" "$MAX_TOKENS" > "$2.request" <<'PY'
import base64, json, mimetypes, sys
model, question, image, max_tokens = sys.argv[1:5]
content = []
if image:
    kind = mimetypes.guess_type(image)[0] or "image/png"
    data = base64.b64encode(open(image, "rb").read()).decode()
    content.append({"type": "image_url", "image_url": {"url": f"data:{kind};base64,{data}"}})
content.append({"type": "text", "text": question})
print(json.dumps({"model": model, "max_tokens": int(max_tokens), "temperature": 0,
                  "messages": [{"role": "user", "content": content}]}))
PY
    local status
    status=$(curl -sS "${auth[@]}" "$URL/v1/chat/completions" -H "Content-Type: application/json" \
        --data-binary @"$2.request" -o "$2" -w '%{http_code}')
    rm -f "$2.request"
    if [[ $status != 200 ]]; then echo "serve.sh: HTTP $status from $1: $(cat "$2")" >&2; exit 1; fi
    python3 -c 'import json, sys
answer = json.load(open(sys.argv[1]))
print("== %s: %r" % (answer["model"], answer["choices"][0]["message"]["content"]))' "$2"
}
ask "$bare" "$OUT/serve-bare.json"
ask "$tuned" "$OUT/serve-vectors.json"
