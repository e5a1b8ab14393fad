"""
Checks a tokenizer.json written by `patchflow tokenizer train` with the Hugging Face `tokenizers`
library (installed on the device image; not installable on the development machines): the file
loads, encodes TEXT to exactly the ids patchflow's loader gave (IDS, a JSON array), and decodes
back to TEXT.

  here:   node -e 'import("@patchflow/trainer").then(m => { const fs = require("fs");
            const t = m.loadHfTokenizer("tok.json"); fs.writeFileSync("ids.json",
            JSON.stringify(Array.from(t.encode(fs.readFileSync("text.txt", "utf8"))))) })'
  device: python3 tools/device/check_tokenizer_json.py tok.json text.txt ids.json   (exit 0 = same)
"""
import json
import sys

import tokenizers


def main(tok_path, text_path, ids_path):
    t = tokenizers.Tokenizer.from_file(tok_path)
    text = open(text_path, encoding="utf-8").read()
    ids = t.encode(text).ids
    ours = json.load(open(ids_path))
    same = ids == ours
    print(f"tokenizers {tokenizers.__version__}: vocab {t.get_vocab_size()}, {len(ids)} tokens (patchflow: {len(ours)}), same ids: {same}")
    if not same:
        i = next((i for i, (a, b) in enumerate(zip(ids, ours)) if a != b), min(len(ids), len(ours)))
        print(f"first difference at {i}: tokenizers {ids[max(0, i - 3):i + 5]} patchflow {ours[max(0, i - 3):i + 5]}")
    round_trip = t.decode(ids, skip_special_tokens=False) == text
    print(f"decode round trip: {round_trip}")
    return 0 if same and round_trip else 1


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: check_tokenizer_json.py TOKENIZER.json TEXT.txt IDS.json")
    sys.exit(main(*sys.argv[1:]))
