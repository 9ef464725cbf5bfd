//! Chat templates rendered byte-identically to Python's jinja2 as transformers configures it.
//!
//! `tests/fixtures/chat_templates/cases.json` is written by `scripts/gen-chat-template-fixtures.py`:
//! real templates (llama.cpp's collection, SmolLM2's GGUF, tessera's built-ins) rendered by
//! jinja2 on a set of conversations, with either the exact output or the error jinja2 raised.
//! Every case must match: same bytes, or an error where jinja2 raised one (with the same message
//! when the template called `raise_exception`). A case minijinja cannot match goes in
//! `KNOWN_DIFFERENCES` with its reason, and the test checks that it still differs exactly so.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;
use tessera_lm::chat_template::{ChatTemplate, Error, Message};

/// The fixture directory; `TESSERA_CHAT_TEMPLATE_FIXTURES` points elsewhere (e.g. at the output
/// of `gen-chat-template-fixtures.py --all-sdist --out DIR`, every template llama.cpp ships).
fn fixture_dir() -> PathBuf {
    match std::env::var_os("TESSERA_CHAT_TEMPLATE_FIXTURES") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chat_templates"),
    }
}

fn load_cases() -> Value {
    let text = std::fs::read_to_string(fixture_dir().join("cases.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Cases where minijinja cannot do what jinja2 does: (template, conversation or "*" for every
/// case of the template that differs, text the difference report must contain, why).
const KNOWN_DIFFERENCES: &[(&str, &str, &str, &str)] = &[(
    "hermes-3-llama-3.1-8b-tool-use",
    "*",
    "\"TypeError: 'NoneType' object is not iterable\"}, tessera rendered",
    "`{% for tool in tools %}` with tools=None: jinja2 raises TypeError, minijinja iterates none \
     as an empty list (built into minijinja's Value::try_iter), so tessera renders the template \
     with an empty tool list",
)];

fn template_for(entry: &Value) -> ChatTemplate {
    let template = if let Some(name) = entry["builtin"].as_str() {
        ChatTemplate::builtin(name).unwrap()
    } else {
        let file = entry["file"].as_str().unwrap();
        let source = std::fs::read_to_string(fixture_dir().join(file)).unwrap();
        ChatTemplate::new(&source)
            .unwrap_or_else(|e| panic!("{}: {e}", entry["name"].as_str().unwrap_or("?")))
    };
    template.with_clock(1_741_356_309)
}

#[derive(Debug)]
enum Outcome {
    Same,
    Differs(String),
}

fn check_case(
    template: &ChatTemplate,
    conversations: &Value,
    entry: &Value,
    case: &Value,
) -> Outcome {
    let conversation = &conversations[case["conversation"].as_str().unwrap()];
    let messages: Vec<Message> = serde_json::from_value(conversation["messages"].clone()).unwrap();
    let mut extra = entry["special_tokens"].as_object().unwrap().clone();
    for source in [&conversation["extra"], &entry["extra"]] {
        for (k, v) in source.as_object().unwrap() {
            extra.insert(k.clone(), v.clone());
        }
    }
    let agp = case["add_generation_prompt"].as_bool().unwrap();
    let got = template.render(&messages, agp, &Value::Object(extra));
    compare(&case["output"], &case["error"], got)
}

/// jinja2's result (`output` string, or `error` object) against tessera's.
fn compare(output: &Value, error: &Value, got: Result<String, Error>) -> Outcome {
    match (output, error, got) {
        (Value::String(want), _, Ok(got)) if *want == got => Outcome::Same,
        (Value::String(want), _, Ok(got)) => Outcome::Differs(first_difference(want, &got)),
        (Value::String(_), _, Err(e)) => Outcome::Differs(format!("tessera failed: {e}")),
        (_, err, Ok(got)) => Outcome::Differs(format!(
            "jinja2 raised {err}, tessera rendered {} bytes",
            got.len()
        )),
        (_, err, Err(e)) => match (err["kind"].as_str(), &e) {
            (Some("raise_exception"), Error::Raised(msg)) if err["message"] == *msg.as_str() => {
                Outcome::Same
            }
            (Some("other"), Error::Render(_)) => Outcome::Same,
            _ => Outcome::Differs(format!("jinja2 raised {err}, tessera: {e:?}")),
        },
    }
}

/// Where two renderings part, with some context on each side.
fn first_difference(want: &str, got: &str) -> String {
    let at = want
        .char_indices()
        .zip(got.chars())
        .find(|((_, a), b)| a != b)
        .map_or_else(|| want.len().min(got.len()), |((i, _), _)| i);
    let around = |s: &str| -> String {
        let mut start = at.saturating_sub(40).min(s.len());
        while !s.is_char_boundary(start) {
            start -= 1;
        }
        let mut end = (at + 60).min(s.len());
        while !s.is_char_boundary(end) {
            end += 1;
        }
        format!("{:?}", &s[start..end])
    };
    format!(
        "output differs at byte {at} (jinja2 {} bytes, tessera {}):\n  jinja2:  {}\n  tessera: {}",
        want.len(),
        got.len(),
        around(want),
        around(got)
    )
}

#[test]
fn templates_render_like_jinja2() {
    let fixture = load_cases();
    let conversations = &fixture["conversations"];
    let mut failures = Vec::new();
    let mut per_template = BTreeMap::new();
    let mut known_seen = 0;
    for entry in fixture["templates"].as_array().unwrap() {
        let name = entry["name"].as_str().unwrap();
        let template = template_for(entry);
        let mut same = 0;
        for case in entry["cases"].as_array().unwrap() {
            let conv = case["conversation"].as_str().unwrap();
            let agp = case["add_generation_prompt"].as_bool().unwrap();
            let known = KNOWN_DIFFERENCES
                .iter()
                .find(|k| k.0 == name && (k.1 == conv || k.1 == "*"));
            match (check_case(&template, conversations, entry, case), known) {
                (Outcome::Same, Some(k)) if k.1 != "*" => failures.push(format!(
                    "{name} / {conv} / agp={agp}: listed as a known difference ({}) but now matches",
                    k.3
                )),
                (Outcome::Same, _) => same += 1,
                (Outcome::Differs(d), Some(k)) if d.contains(k.2) => known_seen += 1,
                (Outcome::Differs(d), _) => failures.push(format!("{name} / {conv} / agp={agp}: {d}")),
            }
        }
        per_template.insert(name.to_string(), same);
        eprintln!(
            "{name}: {same}/{} cases identical to jinja2",
            entry["cases"].as_array().map_or(0, Vec::len)
        );
    }
    for k in KNOWN_DIFFERENCES {
        assert!(
            per_template.contains_key(k.0),
            "known difference for a template the fixture lacks: {}",
            k.0
        );
    }
    assert!(
        KNOWN_DIFFERENCES.is_empty() || known_seen > 0,
        "no known difference showed up: remove the stale entries"
    );
    assert!(
        per_template.len() >= 20,
        "fixture lost templates: {per_template:?}"
    );
    assert!(
        failures.is_empty(),
        "{} failing cases:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// Probes minijinja cannot answer as jinja2 does: (probe, text the difference report must
/// contain, why).
const KNOWN_PROBE_DIFFERENCES: &[(&str, &str, &str)] = &[
    (
        "concat_tilde_float",
        "tessera: \"a10000000000000000.0\"",
        "`~` formats a float with minijinja's Display, not Python's repr (`{{ x }}`, `string` and \
         `join` do use Python's); no real template concatenates floats with `~`",
    ),
    (
        "str_percent",
        "tried to use % operator on unsupported types string and sequence",
        "minijinja has no printf-style `str % args` (none of llama.cpp's 70 templates uses it; \
         `'{}'.format(...)` works)",
    ),
    (
        "loop_over_none",
        "'NoneType' object is not iterable\"}, tessera rendered",
        "minijinja iterates none as an empty list where Python raises TypeError",
    ),
    (
        "safe_concat",
        "tessera: \"a<<b>|<c>d\"",
        "jinja2 (markupsafe) HTML-escapes a plain string added to a `|safe` one; minijinja \
         concatenates as is (seen in functionary-medium-v3.1's tool list)",
    ),
    (
        "tojson_generator",
        "not JSON serializable\"}, tessera rendered",
        "minijinja's `map`/`select*`/`reject*` filters return lists, jinja2's return generators \
         that json.dumps rejects: tessera renders the list where jinja2 raises",
    ),
    (
        "macro",
        "tessera: \"[1dFalse][12False][xyFalse]\"",
        "minijinja macros have no implicit `kwargs`/`varargs` (unused by real chat templates)",
    ),
];

#[test]
fn probes_behave_like_jinja2() {
    let fixture = load_cases();
    let vars = &fixture["probe_vars"];
    let mut failures = Vec::new();
    let mut same = 0;
    let probes = fixture["probes"].as_array().unwrap();
    for probe in probes {
        let name = probe["name"].as_str().unwrap();
        let source = probe["source"].as_str().unwrap();
        let outcome = match ChatTemplate::new(source) {
            Ok(t) => {
                let got = t.with_clock(1_741_356_309).render(&[], false, vars);
                compare(&probe["output"], &probe["error"], got)
            }
            Err(e) => match probe["error"]["kind"].as_str() {
                Some("other") => Outcome::Same,
                _ => Outcome::Differs(format!("tessera does not compile it: {e}")),
            },
        };
        let known = KNOWN_PROBE_DIFFERENCES.iter().find(|k| k.0 == name);
        match (outcome, known) {
            (Outcome::Same, None) => same += 1,
            (Outcome::Same, Some(k)) => failures.push(format!(
                "{name}: listed as a known difference ({}) but now matches",
                k.2
            )),
            (Outcome::Differs(d), Some(k)) if d.contains(k.1) => {}
            (Outcome::Differs(d), _) => failures.push(format!("{name} `{source}`: {d}")),
        }
    }
    eprintln!(
        "{same}/{} probes identical to jinja2, {} known differences",
        probes.len(),
        KNOWN_PROBE_DIFFERENCES.len()
    );
    assert!(
        failures.is_empty(),
        "{} failing probes:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn every_fixture_template_is_covered() {
    // A template file in the directory that cases.json does not use would be dead weight.
    let fixture = load_cases();
    let used: Vec<&str> = fixture["templates"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["file"].as_str())
        .collect();
    for f in std::fs::read_dir(fixture_dir()).unwrap() {
        let name = f.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".jinja") {
            assert!(used.contains(&name.as_str()), "{name} is not in cases.json");
        }
    }
}

#[test]
fn smollm2_gguf_template_renders() {
    // The template as the GGUF carries it (the fixture holds a copy made by the script).
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../.cache/models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !path.exists() {
        eprintln!("skipping: {} not present", path.display());
        return;
    }
    let gguf = tessera_io::gguf::GgufFile::open(&path).unwrap();
    let source = gguf.metadata.str("tokenizer.chat_template").unwrap();
    let copy = std::fs::read_to_string(fixture_dir().join("smollm2-135m-instruct.jinja")).unwrap();
    assert_eq!(source, copy);
    let t = ChatTemplate::new(source).unwrap();
    let out = t
        .render(&[Message::user("Hi")], true, &serde_json::json!({}))
        .unwrap();
    assert_eq!(
        out,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn builtin_gemma3_prompt_for_tessera_chat() {
    let t = ChatTemplate::builtin("gemma3").unwrap();
    let extra = serde_json::json!({"bos_token": "<bos>", "eos_token": "<eos>"});
    let out = t
        .render(
            &[
                Message::system("You are terse."),
                Message::user("Hi"),
                Message::assistant("Hello."),
                Message::user("Bye"),
            ],
            true,
            &extra,
        )
        .unwrap();
    assert_eq!(
        out,
        "<bos><start_of_turn>user\nYou are terse.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello.<end_of_turn>\n<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"
    );
    let err = t
        .render(&[Message::user("a"), Message::user("b")], true, &extra)
        .unwrap_err();
    assert!(
        matches!(&err, Error::Raised(m) if m.contains("must alternate")),
        "{err}"
    );
    assert_eq!(
        tessera_lm::chat_template::builtin_for_architecture("gemma3"),
        "gemma3"
    );
}
