#!/usr/bin/env node
// Expected ids and texts for real Hugging Face tokenizers, computed with Hugging Face's own code.
//
//   node hf_reference.js --cases CASES_JSON --npm NPM_DIR [--tokenizer DIR]... [--out OUT_JSON]
//
// CASES_JSON is tests/tokenizer/hf_cases.json. NPM_DIR is tests/npm, where scripts/setup ran
// `npm ci`: the real tokenizer.json / tokenizer_config.json files come from the @lenml/tokenizer-*
// packages (their models/ folder), the reference is Hugging Face's Rust `tokenizers` library
// through its official Node binding (tokenizers-linux-x64-gnu 0.13.4-rc2, which is Rust
// tokenizers 0.13.3). --tokenizer DIR runs the cases on one tokenizer directory instead of the
// packages. The result (stdout, or OUT_JSON) is
//
//   {"cases": [{"name", "text"}...],
//    "tokenizers": [{"name", "dir", "results": [{"ids", "ids_plain", "decoded", "decoded_skip",
//                                                "decoded_each"?, "note"?} or {"skipped"}...],
//                      "decodes": [{"ids", "decoded", "decoded_skip"}...]}...]}
//
// where ids use add_special_tokens=true, ids_plain false, and decoded / decoded_skip decode `ids`
// with skip_special_tokens false / true; "decodes" are pseudo-random id lists (fixed seed).
//
// Every result is cross-checked with @lenml/tokenizers (a port of transformers.js, which follows
// current Hugging Face semantics). Rust tokenizers 0.13 predates one feature these files use:
// `ignore_merges` (tokenizers 0.19, Llama 3), which emits a pre-tokenized word that is itself in
// the vocabulary as one token instead of merging it. Where the two disagree only because of that
// (checked piece by piece: each differing run is one modern token whose text is the
// concatenation of 0.13's pieces, and the tokenizer sets ignore_merges), the modern ids are the
// expected ones and the result carries a note. Two known transformers.js divergences keep Rust's
// result, with a note: a case marked lenml_differs in CASES_JSON (JavaScript's \s matches U+FEFF),
// and decoding an invalid run of byte-fallback tokens (Rust gives one U+FFFD per byte, as
// current tokenizers still does). Any other disagreement is an error: the script exits non-zero
// and names the case.
'use strict';

const fs = require('fs');
const path = require('path');

function die(message) {
  process.stderr.write(`hf_reference: ${message}\n`);
  process.exit(1);
}

function parseArgs(argv) {
  const args = {tokenizers: []};
  for (let i = 0; i < argv.length; i++) {
    const key = argv[i];
    const value = argv[i + 1];
    if (value === undefined) die(`${key} needs a value`);
    if (key === '--cases') args.cases = value;
    else if (key === '--npm') args.npm = value;
    else if (key === '--out') args.out = value;
    else if (key === '--tokenizer') args.tokenizers.push(value);
    else die(`unknown argument ${key}`);
    i++;
  }
  if (!args.cases || !args.npm) {
    die('usage: hf_reference.js --cases CASES_JSON --npm NPM_DIR [--tokenizer DIR]... [--out F]');
  }
  return args;
}

// Loads a package from NPM_DIR/node_modules, failing with the set-up step to run.
function requireFrom(npmDir, name) {
  const dir = path.join(npmDir, 'node_modules', name);
  if (!fs.existsSync(dir)) {
    die(`${dir} is missing: run scripts/setup (it runs "npm ci" in ${npmDir})`);
  }
  return require(path.resolve(dir));
}

function readJson(file) {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    die(`${file}: ${e.message}`);
  }
}

// The text of a case: its "text", a sweep of code points, or a licence file repeated to at least
// min_bytes.
function caseText(c) {
  if (typeof c.text === 'string') return c.text;
  if (c.code_points) {
    const [first, end, step] = c.code_points;
    let text = '';
    let n = 0;
    for (let cp = first; cp < end; cp += step) {
      if (cp >= 0xd800 && cp <= 0xdfff) continue;
      text += String.fromCodePoint(cp);
      if (++n % 8 === 0) text += ' ';
    }
    return text;
  }
  if (!c.license_file) die(`case ${c.name} has neither text nor license_file`);
  const source = fs.readFileSync(path.join('/usr/share/common-licenses', c.license_file), 'utf8');
  let text = '';
  while (Buffer.byteLength(text, 'utf8') < c.min_bytes) text += source;
  return text;
}

// tokenizer.json as Rust tokenizers 0.13 reads it: merges given as [left, right] pairs (the
// format of tokenizers >= 0.20) become "left right" strings, which is lossless when no merge
// part contains a space (checked).
function forRust013(json) {
  const merges = json.model && json.model.merges;
  if (Array.isArray(merges) && merges.length > 0 && Array.isArray(merges[0])) {
    json.model.merges = merges.map(([a, b]) => {
      if (a.includes(' ') || b.includes(' ')) die(`merge "${a}" "${b}" contains a space`);
      return `${a} ${b}`;
    });
  }
  return json;
}

// transformers' LlamaTokenizerFast / GemmaTokenizerFast rebuild the post-processor from
// add_bos_token / add_eos_token (update_post_processor); the other fast tokenizers use
// tokenizer.json as it is. Returns the tokenizer.json that transformers effectively runs.
function applyTransformersOverrides(json, config) {
  const cls = config.tokenizer_class || '';
  if (!/Llama|Gemma/.test(cls)) return json;
  if (!('add_bos_token' in config) && !('add_eos_token' in config)) return json;
  const text = (t) => (t && typeof t === 'object' ? t.content : t);
  const addBos = config.add_bos_token !== undefined ? config.add_bos_token : true;
  const addEos = config.add_eos_token !== undefined ? config.add_eos_token : false;
  const bos = text(config.bos_token);
  const eos = text(config.eos_token);
  const idOf = (t) => {
    const added = (json.added_tokens || []).find((a) => a.content === t);
    return added ? added.id : json.model.vocab[t];
  };
  const single = [];
  const special = {};
  const addSpecial = (t) => {
    if (idOf(t) === undefined) die(`${t} is not in the vocabulary`);
    single.push({SpecialToken: {id: t, type_id: 0}});
    special[t] = {id: t, ids: [idOf(t)], tokens: [t]};
  };
  if (addBos && bos) addSpecial(bos);
  single.push({Sequence: {id: 'A', type_id: 0}});
  if (addEos && eos) addSpecial(eos);
  json.post_processor = {type: 'TemplateProcessing', single, pair: single, special_tokens: special};
  return json;
}

// True when `ids` hold a run of SentencePiece byte tokens (<0xNN>) that is not valid UTF-8.
function hasInvalidByteRun(ids, piece) {
  const runs = [[]];
  for (const id of ids) {
    const m = /^<0x([0-9A-F]{2})>$/.exec(piece(id) || '');
    if (m) {
      runs[runs.length - 1].push(parseInt(m[1], 16));
    } else if (runs[runs.length - 1].length > 0) {
      runs.push([]);
    }
  }
  const decoder = new TextDecoder('utf-8', {fatal: true});
  return runs.some((run) => {
    try {
      decoder.decode(Buffer.from(run));
      return false;
    } catch (e) {
      return true;
    }
  });
}

// A deterministic generator of numbers in [0, 1).
function lcg(seed) {
  let state = seed >>> 0;
  return () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state / 4294967296;
  };
}

function sameIds(a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

// True when `modern` differs from `old` only by ignore_merges: both spell the same pieces, and
// every run where they differ is a single modern token against several old ones.
function onlyIgnoreMerges(old, modern, piece) {
  let i = 0;
  let j = 0;
  while (i < old.length && j < modern.length) {
    if (old[i] === modern[j]) {
      i++;
      j++;
      continue;
    }
    const want = piece(modern[j]);
    let got = '';
    const start = i;
    while (i < old.length && got.length < want.length) got += piece(old[i++]);
    if (got !== want || i - start < 2) return false;
    j++;
  }
  return i === old.length && j === modern.length;
}

async function runTokenizer(name, dir, cases, texts, bindings) {
  const json = readJson(path.join(dir, 'tokenizer.json'));
  const configFile = path.join(dir, 'tokenizer_config.json');
  const config = fs.existsSync(configFile) ? readJson(configFile) : {};
  const effective = applyTransformersOverrides(JSON.parse(JSON.stringify(json)), config);
  const rust = bindings.rust.Tokenizer.fromString(JSON.stringify(forRust013(effective)));
  const js = bindings.js.TokenizerLoader.fromPreTrained({
    tokenizerJSON: json,
    tokenizerConfig: config,
  });
  const ignoreMerges = json.model.ignore_merges === true;
  const piece = (id) => rust.idToToken(id);
  // transformers.js refuses an empty list; Hugging Face decodes it to "".
  const jsDecode = (ids, skip) => ids.length === 0
      ? ''
      : js.decode(ids, {skip_special_tokens: skip, clean_up_tokenization_spaces: false});

  const results = [];
  const problems = [];
  for (let k = 0; k < cases.length; k++) {
    const text = texts[k];
    const result = {};
    if ((cases[k].skip || []).includes(name)) {
      results.push({skipped: true});
      continue;
    }
    for (const [key, special] of [['ids', true], ['ids_plain', false]]) {
      const rustIds = (await rust.encode(text, null, {addSpecialTokens: special})).getIds();
      const jsIds = Array.from(js.encode(text, {add_special_tokens: special}));
      if (sameIds(rustIds, jsIds)) {
        result[key] = rustIds;
      } else if (cases[k].lenml_differs) {
        result[key] = rustIds;
        result.note = `@lenml/tokenizers differs: ${cases[k].lenml_differs}`;
      } else if (ignoreMerges && onlyIgnoreMerges(rustIds, jsIds, piece)) {
        result[key] = jsIds;
        result.note = 'tokenizers 0.13 lacks ignore_merges; ids from @lenml/tokenizers';
      } else {
        problems.push(`${name}/${cases[k].name} ${key}: tokenizers 0.13 and @lenml/tokenizers ` +
                      `disagree:\n  ${JSON.stringify(rustIds).slice(0, 400)}\n  ` +
                      `${JSON.stringify(jsIds).slice(0, 400)}`);
        result[key] = rustIds;
      }
    }
    for (const [key, skip] of [['decoded', false], ['decoded_skip', true]]) {
      result[key] = await rust.decode(result.ids, skip);
      const jsText = jsDecode(result.ids, skip);
      if (jsText !== result[key] && !cases[k].lenml_differs) {
        problems.push(`${name}/${cases[k].name} ${key}: decodes disagree: ` +
                      `${JSON.stringify(result[key]).slice(0, 200)} vs ` +
                      `${JSON.stringify(jsText).slice(0, 200)}`);
      }
    }
    if (cases[k].decode_each) {
      result.decoded_each = [];
      for (const id of result.ids) result.decoded_each.push(await rust.decode([id], false));
    }
    results.push(result);
  }

  // Decoding arbitrary id sequences: stray byte pieces, special tokens anywhere.
  const random = lcg(12345);
  const vocabSize = rust.getVocabSize(true);
  const decodes = [];
  for (let n = 0; n < 40; n++) {
    const ids = [];
    const length = 1 + Math.floor(random() * 24);
    for (let i = 0; i < length; i++) {
      // Low ids (byte pieces, specials of SentencePiece vocabularies) and the added tokens at
      // the end are the interesting ones.
      const r = random();
      ids.push(r < 0.3 ? Math.floor(random() * 300)
               : r < 0.4 ? vocabSize - 1 - Math.floor(random() * 30)
               : Math.floor(random() * vocabSize));
    }
    const entry = {ids};
    for (const [key, skip] of [['decoded', false], ['decoded_skip', true]]) {
      entry[key] = await rust.decode(ids, skip);
      const jsText = jsDecode(ids, skip);
      if (jsText !== entry[key] && hasInvalidByteRun(ids, piece)) {
        entry.note = 'tokenizers\' ByteFallback decoder turns an invalid run of byte tokens into ' +
                     'one U+FFFD per byte; transformers.js decodes it with TextDecoder';
      } else if (jsText !== entry[key]) {
        problems.push(`${name}/decode ${JSON.stringify(ids)} ${key}: decodes disagree: ` +
                      `${JSON.stringify(entry[key])} vs ${JSON.stringify(jsText)}`);
      }
    }
    decodes.push(entry);
  }
  return {results, decodes, problems};
}

// Writes the variant `t` (its package's tokenizer files with t.replace applied to tokenizer.json)
// next to OUT_JSON and returns its directory.
function variantDir(args, t) {
  if (!args.out) die(`tokenizer ${t.name} is a variant: it needs --out`);
  const source = path.join(args.npm, 'node_modules', t.package, 'models');
  const dir = path.join(path.dirname(path.resolve(args.out)), 'hf_tokenizers', t.name);
  if (!fs.existsSync(path.join(source, 'tokenizer.json'))) {
    die(`${source}/tokenizer.json is missing: run scripts/setup (npm ci in ${args.npm})`);
  }
  const json = readJson(path.join(source, 'tokenizer.json'));
  Object.assign(json, t.replace);
  fs.mkdirSync(dir, {recursive: true});
  fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(json));
  fs.copyFileSync(path.join(source, 'tokenizer_config.json'), path.join(dir, 'tokenizer_config.json'));
  return dir;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const spec = readJson(args.cases);
  const bindings = {
    rust: requireFrom(args.npm, 'tokenizers-linux-x64-gnu'),
    js: requireFrom(args.npm, '@lenml/tokenizers'),
  };
  const tokenizers = args.tokenizers.length > 0
      ? args.tokenizers.map((dir) => ({name: path.basename(path.resolve(dir)), dir}))
      : spec.tokenizers.map((t) => ({
          name: t.name,
          dir: t.replace ? variantDir(args, t) : path.join(args.npm, 'node_modules', t.package, 'models'),
        }));
  const texts = spec.cases.map(caseText);
  const out = {cases: spec.cases.map((c, k) => ({name: c.name, text: texts[k]})), tokenizers: []};
  const problems = [];
  for (const t of tokenizers) {
    if (!fs.existsSync(path.join(t.dir, 'tokenizer.json'))) {
      die(`${t.dir}/tokenizer.json is missing: run scripts/setup (npm ci in ${args.npm})`);
    }
    const r = await runTokenizer(t.name, t.dir, spec.cases, texts, bindings);
    problems.push(...r.problems);
    out.tokenizers.push(
        {name: t.name, dir: path.resolve(t.dir), results: r.results, decodes: r.decodes});
  }
  if (problems.length > 0) die(`the references disagree:\n${problems.join('\n')}`);
  const text = JSON.stringify(out);
  if (args.out) {
    fs.writeFileSync(args.out, text);
  } else {
    process.stdout.write(text + '\n');
  }
}

main().catch((e) => die(e.stack || String(e)));
