//! Chat templates: a conversation rendered into the prompt text a model was trained on, byte for
//! byte as Hugging Face transformers renders it with Python's jinja2.
//!
//! Models ship their template as Jinja source (`tokenizer.chat_template` in GGUF metadata,
//! `chat_template` in `tokenizer_config.json`). [`ChatTemplate`] compiles it with
//! [minijinja](https://docs.rs/minijinja) set up the way transformers sets up jinja2
//! (`ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)`, loop controls,
//! `{% generation %}` blocks), with Python's string and dict methods (`.strip()`,
//! `.startswith()`, `.split()`, `.items()`, `.get()`, ... from `minijinja-contrib`'s pycompat),
//! and with Python's way of printing values.
//!
//! # API
//!
//! - [`ChatTemplate::new`]`(source) -> Result<ChatTemplate>` compiles once; a template that does
//!   not parse is [`Error::Syntax`].
//! - [`ChatTemplate::render`]`(&self, messages, add_generation_prompt, extra) -> Result<String>`:
//!   `extra` is a JSON object of further template variables (`bos_token`, `eos_token`, `tools`,
//!   `enable_thinking`, `date_string`, ...; `null` for none). A template that calls
//!   `raise_exception(msg)` gives [`Error::Raised`] with `msg`; any other failure is
//!   [`Error::Render`].
//! - [`ChatTemplate::builtin`]`(name)`: fallbacks for models whose files carry no template, named
//!   in [`BUILTINS`] (`"chatml"`, `"gemma3"`, `"llama3"`); [`builtin_for_architecture`] picks one
//!   from a GGUF `general.architecture`.
//! - [`ChatTemplate::with_clock`] pins what `strftime_now` reports (tests, reproducible prompts).
//! - [`Message`] is one turn, serde-compatible with OpenAI's chat messages.
//!
//! ```
//! use tessera_lm::chat_template::{ChatTemplate, Message};
//! let t = ChatTemplate::builtin("gemma3")?;
//! let prompt = t.render(
//!     &[Message::system("Be brief."), Message::user("Hi!")],
//!     true,
//!     &serde_json::json!({"bos_token": "<bos>"}),
//! )?;
//! assert_eq!(prompt, "<bos><start_of_turn>user\nBe brief.\n\nHi!<end_of_turn>\n<start_of_turn>model\n");
//! # Ok::<(), tessera_lm::chat_template::Error>(())
//! ```
//!
//! # What the template sees
//!
//! As in transformers' `apply_chat_template`: `messages` (a list of dicts), `add_generation_prompt`,
//! `tools` and `documents` (both `None` unless `extra` sets them), every key of `extra`, the
//! functions `raise_exception(msg)` and `strftime_now(format)`, and
//! transformers' `tojson` filter (`json.dumps(x, ensure_ascii=False, indent=None,
//! separators=None, sort_keys=False)`: Python's `", "` / `": "` separators, no HTML escaping).
//!
//! Python semantics that differ from minijinja's defaults are restored: `{{ x }}` prints `None`,
//! `True`, `False`, Python float reprs (`1e+16`) and Python reprs of lists and dicts
//! (`['a', 1]`); the `string`, `join`, `trim`, `int`, `float` filters and `.strip()` /
//! `.split()` follow Python (Python's whitespace, defaults instead of errors); `truncate` and
//! `wordcount` exist; `list.index()` works; the `sequence`, `iterable` and `number` tests answer
//! as jinja2's do; `tojson` refuses lazy iterables (`.items()`, `range()`) as json.dumps does.
//!
//! # Known differences from jinja2
//!
//! Checked on all 80 templates llama.cpp ships (the golden conversations, via
//! `scripts/gen-chat-template-fixtures.py --all-sdist`): every case that renders under jinja2
//! renders byte-identically here, except functionary-medium-v3.1's tool list (the `|safe`
//! point below). Where jinja2 raises, tessera can be more lenient:
//!
//! - Iterating `None` (`{% for t in tools %}` with no tools) gives an empty loop; jinja2 raises
//!   TypeError (Hermes-2/3 and Command-R `tool_use` templates called without tools).
//! - `map`/`select`/`reject` filters build lists, so `| tojson` on them works where jinja2's
//!   generators make json.dumps raise.
//! - A plain string added to a `|safe` string is not HTML-escaped (markupsafe escapes it).
//! - `~` formats floats with minijinja's Display (`1e16` as `10000000000000000.0`).
//! - No printf-style `'%s' % x` and no implicit `kwargs`/`varargs` in macros (render errors).
//! - Jinja2 filters minijinja lacks (`wordwrap`, `center`, `striptags`, ...) are render errors.
//! - JSON objects keep the order `serde_json::Value` gives them: sorted by key unless the
//!   workspace enables serde_json's `preserve_order` (Python keeps insertion order), which shows
//!   in `tojson` output and `.items()` loops over tool schemas.
//! - A message's content is a string: `null` becomes `""`, a list of text parts is joined with
//!   newlines, other parts are rejected (templates that test `content is none` or iterate over
//!   content parts see a string).
//! - `strftime_now` reports UTC (transformers uses the local time zone).

mod python;
mod strftime;

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior, Value};
use serde::{Deserialize, Deserializer, Serialize};

/// The names [`ChatTemplate::builtin`] knows.
pub const BUILTINS: [&str; 3] = ["chatml", "gemma3", "llama3"];

/// ChatML (`<|im_start|>role\n...<|im_end|>\n`), as used by Qwen, SmolLM and Hermes; no
/// default system prompt.
const CHATML: &str = include_str!("builtin/chatml.jinja");
/// Gemma 3's official template (`<start_of_turn>user\n...<end_of_turn>\n`, assistant turns are
/// `model`, a system message is prepended to the first user turn, roles must alternate).
/// Expects `bos_token` (`<bos>`) in `extra`.
const GEMMA3: &str = include_str!("builtin/gemma3.jinja");
/// Meta-Llama-3-8B-Instruct's official template (no tools). Expects `bos_token`
/// (`<|begin_of_text|>`) in `extra`.
const LLAMA3: &str = include_str!("builtin/llama3.jinja");

const TEMPLATE_NAME: &str = "chat_template";
/// `clock` value meaning "read the system clock".
const SYSTEM_CLOCK: i64 = i64::MIN;

/// Errors from compiling or rendering a chat template.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The template source does not parse.
    #[error("chat template does not compile: {0}")]
    Syntax(String),
    /// The template called `raise_exception(message)` (e.g. roles that do not alternate).
    #[error("chat template raised an exception: {0}")]
    Raised(String),
    /// Rendering failed (undefined attribute, type error, unsupported construct, ...).
    #[error("chat template failed to render: {0}")]
    Render(String),
    /// [`ChatTemplate::builtin`] was given a name it does not know.
    #[error("no built-in chat template named '{0}' (built-ins: chatml, gemma3, llama3)")]
    UnknownBuiltin(String),
    /// Bad arguments to [`ChatTemplate::render`].
    #[error("chat template: {0}")]
    Invalid(String),
}

/// Result with the chat template [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for crate::Error {
    fn from(e: Error) -> Self {
        crate::Error::Invalid(e.to_string())
    }
}

/// One turn of a conversation, serde-compatible with OpenAI's chat messages.
///
/// In the template it is a dict with `role`, `content`, then `name`, `tool_calls` and
/// `tool_call_id` when set, then the keys of `extra` (e.g. `reasoning_content`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user`, `assistant`, `tool`, ...
    pub role: String,
    /// The text. Deserializes from a string, `null` (empty) or a list of `{"type": "text",
    /// "text": ...}` parts (joined with newlines).
    #[serde(default, deserialize_with = "content_from_json")]
    pub content: String,
    /// The tool's name on `tool` messages, or a participant name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// An assistant's tool calls, as the template expects them (Hugging Face convention:
    /// `[{"type": "function", "function": {"name": ..., "arguments": {...}}}]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<serde_json::Value>,
    /// The call a `tool` message answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// Any other fields (`reasoning_content`, ...), passed to the template as they are.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Message {
    /// A message with `role` and `content` and nothing else.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Message {
        Message {
            role: role.into(),
            content: content.into(),
            ..Message::default()
        }
    }

    /// A `system` message.
    pub fn system(content: impl Into<String>) -> Message {
        Message::new("system", content)
    }

    /// A `user` message.
    pub fn user(content: impl Into<String>) -> Message {
        Message::new("user", content)
    }

    /// An `assistant` message.
    pub fn assistant(content: impl Into<String>) -> Message {
        Message::new("assistant", content)
    }

    fn to_value(&self) -> Value {
        let mut pairs: Vec<(&str, Value)> = vec![
            ("role", Value::from(self.role.as_str())),
            ("content", Value::from(self.content.as_str())),
        ];
        if let Some(name) = &self.name {
            pairs.push(("name", Value::from(name.as_str())));
        }
        if let Some(calls) = &self.tool_calls {
            pairs.push(("tool_calls", json_to_value(calls)));
        }
        if let Some(id) = &self.tool_call_id {
            pairs.push(("tool_call_id", Value::from(id.as_str())));
        }
        for (k, v) in &self.extra {
            pairs.push((k.as_str(), json_to_value(v)));
        }
        Value::from_pairs(pairs)
    }
}

fn content_from_json<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<String, D::Error> {
    use serde::de::Error as _;
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Null => Ok(String::new()),
        serde_json::Value::String(s) => Ok(s),
        serde_json::Value::Array(parts) => {
            let mut texts = Vec::with_capacity(parts.len());
            for part in &parts {
                match (part.get("type").and_then(|t| t.as_str()), part.get("text")) {
                    (Some("text"), Some(serde_json::Value::String(t))) => texts.push(t.as_str()),
                    _ => {
                        return Err(D::Error::custom(format!(
                            "message content parts must be {{\"type\": \"text\", \"text\": ...}}, got {part}"
                        )));
                    }
                }
            }
            Ok(texts.join("\n"))
        }
        other => Err(D::Error::custom(format!(
            "message content must be a string, null or a list of text parts, got {other}"
        ))),
    }
}

/// A compiled chat template. Rendering takes `&self`, so one template serves many threads.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    /// Unix seconds `strftime_now` reports, or [`SYSTEM_CLOCK`].
    clock: Arc<AtomicI64>,
}

impl ChatTemplate {
    /// Compiles a chat template.
    pub fn new(source: &str) -> Result<ChatTemplate> {
        let clock = Arc::new(AtomicI64::new(SYSTEM_CLOCK));
        let mut env = environment(clock.clone())?;
        env.add_template_owned(TEMPLATE_NAME, rewrite_generation_tags(source).into_owned())
            .map_err(|e| Error::Syntax(e.to_string()))?;
        Ok(ChatTemplate { env, clock })
    }

    /// A built-in template (see [`BUILTINS`]) for models whose files carry none.
    pub fn builtin(name: &str) -> Result<ChatTemplate> {
        let source = match name {
            "chatml" => CHATML,
            "gemma3" => GEMMA3,
            "llama3" => LLAMA3,
            _ => return Err(Error::UnknownBuiltin(name.to_string())),
        };
        ChatTemplate::new(source)
    }

    /// Pins the instant `strftime_now` reports to `unix_seconds` (UTC) instead of the system
    /// clock.
    pub fn with_clock(self, unix_seconds: i64) -> ChatTemplate {
        self.clock.store(unix_seconds, Ordering::Relaxed);
        self
    }

    /// Renders `messages`. `add_generation_prompt` asks the template to open the assistant's
    /// turn; `extra` is a JSON object (or `null`) of further variables: special tokens
    /// (`bos_token`, `eos_token`), `tools`, `documents`, and template switches such as
    /// `enable_thinking`.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        extra: &serde_json::Value,
    ) -> Result<String> {
        let empty = serde_json::Map::new();
        let extra = match extra {
            serde_json::Value::Null => &empty,
            serde_json::Value::Object(map) => map,
            other => {
                return Err(Error::Invalid(format!(
                    "extra variables must be a JSON object, got {other}"
                )));
            }
        };
        for reserved in ["messages", "add_generation_prompt"] {
            if extra.contains_key(reserved) {
                return Err(Error::Invalid(format!(
                    "'{reserved}' is set by render's arguments, not by extra variables"
                )));
            }
        }
        let messages: Vec<Value> = messages.iter().map(Message::to_value).collect();
        let mut ctx: Vec<(&str, Value)> = vec![
            ("messages", Value::from(messages)),
            ("add_generation_prompt", Value::from(add_generation_prompt)),
        ];
        for default in ["tools", "documents"] {
            if !extra.contains_key(default) {
                ctx.push((default, Value::from(())));
            }
        }
        for (k, v) in extra {
            ctx.push((k.as_str(), json_to_value(v)));
        }
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| Error::Render(e.to_string()))?;
        template
            .render(Value::from_pairs(ctx))
            .map_err(render_error)
    }
}

/// The built-in template to fall back on for a GGUF `general.architecture` whose file has no
/// `tokenizer.chat_template`: `gemma3` for the Gemma family, `llama3` for `llama`, `chatml`
/// otherwise (a guess: check the model card).
pub fn builtin_for_architecture(architecture: &str) -> &'static str {
    match architecture {
        a if a.starts_with("gemma") => "gemma3",
        "llama" => "llama3",
        _ => "chatml",
    }
}

/// The error `raise_exception` raises, found again in the error's source chain.
#[derive(Debug)]
struct Raised(String);

impl std::fmt::Display for Raised {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Raised {}

fn render_error(e: minijinja::Error) -> Error {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(err) = source {
        if let Some(raised) = err.downcast_ref::<Raised>() {
            return Error::Raised(raised.0.clone());
        }
        source = err.source();
    }
    Error::Render(e.to_string())
}

fn raise_exception(message: Option<Value>) -> std::result::Result<Value, minijinja::Error> {
    let mut msg = String::new();
    if let Some(m) = &message {
        python::py_str(m, &mut msg);
    }
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg.clone()).with_source(Raised(msg)))
}

/// An environment configured like transformers' jinja2 one.
fn environment(clock: Arc<AtomicI64>) -> Result<Environment<'static>> {
    let mut env = Environment::new();
    let syntax = minijinja::syntax::SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .keep_trailing_newline(false)
        .build()
        .map_err(|e| Error::Syntax(e.to_string()))?;
    env.set_syntax(syntax);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_undefined_behavior(UndefinedBehavior::Lenient);
    env.set_unknown_method_callback(python::unknown_method);
    env.set_formatter(|out, _state, value| {
        let mut s = String::new();
        python::py_str(value, &mut s);
        out.write_str(&s)
            .map_err(|_| minijinja::Error::from(ErrorKind::WriteFailure))
    });
    env.add_filter("tojson", python::tojson_filter);
    env.add_filter("string", python::string_filter);
    env.add_filter("join", python::join_filter);
    env.add_filter("trim", python::trim_filter);
    env.add_filter("int", python::int_filter);
    env.add_filter("float", python::float_filter);
    env.add_filter("truncate", python::truncate_filter);
    env.add_filter("wordcount", python::wordcount_filter);
    env.add_test("iterable", python::is_iterable);
    env.add_test("sequence", python::is_sequence);
    env.add_test("number", python::is_number);
    env.add_function("raise_exception", raise_exception);
    env.add_function("strftime_now", move |format: String| -> String {
        let pinned = clock.load(Ordering::Relaxed);
        let unix = if pinned == SYSTEM_CLOCK {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        } else {
            pinned
        };
        strftime::strftime(&format, &strftime::Tm::from_unix(unix))
    });
    Ok(env)
}

/// A `serde_json::Value` as a template value (objects keep serde_json's key order).
fn json_to_value(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::from(()),
        serde_json::Value::Bool(b) => Value::from(*b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                Value::from(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        serde_json::Value::String(s) => Value::from(s.as_str()),
        serde_json::Value::Array(items) => {
            Value::from(items.iter().map(json_to_value).collect::<Vec<_>>())
        }
        serde_json::Value::Object(map) => {
            Value::from_pairs(map.iter().map(|(k, v)| (k.as_str(), json_to_value(v))))
        }
    }
}

/// transformers' `{% generation %}...{% endgeneration %}` (marks the assistant's tokens, renders
/// its body unchanged) becomes `{% if true %}...{% endif %}`, whitespace control kept.
fn rewrite_generation_tags(source: &str) -> Cow<'_, str> {
    if !source.contains("generation") {
        return Cow::Borrowed(source);
    }
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("%}") else {
            break;
        };
        out.push_str(&rest[..start]);
        let inner = &after[..end];
        let (lead, body) = match inner.as_bytes().first() {
            Some(b'-' | b'+') => inner.split_at(1),
            _ => ("", inner),
        };
        let (body, trail) = match body.as_bytes().last() {
            Some(b'-' | b'+') => body.split_at(body.len() - 1),
            _ => (body, ""),
        };
        match body.trim() {
            "generation" => {
                let _ = write!(out, "{{%{lead} if true {trail}%}}");
            }
            "endgeneration" => {
                let _ = write!(out, "{{%{lead} endif {trail}%}}");
            }
            _ => out.push_str(&rest[start..start + 2 + end + 2]),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_tags_become_if_blocks() {
        assert_eq!(
            rewrite_generation_tags("a{%- generation -%}b{% endgeneration %}c{{ x }}{% if y %}"),
            "a{%- if true -%}b{% endif %}c{{ x }}{% if y %}"
        );
        assert_eq!(
            rewrite_generation_tags("{% if generation %}"),
            "{% if generation %}"
        );
    }

    #[test]
    fn values_print_like_python() {
        let t = ChatTemplate::new(
            "{{ none }} {{ true }} {{ 1.0 }} {{ 1e16 }} {{ [1, 'a', none, {'k': false}] }} {{ x }} {{ 3 | string }}{{ [1, 2] | join('-') }}",
        )
        .unwrap();
        let out = t.render(&[], false, &serde_json::Value::Null).unwrap();
        assert_eq!(
            out,
            "None True 1.0 1e+16 [1, 'a', None, {'k': False}]  31-2"
        );
    }

    #[test]
    fn tojson_matches_json_dumps() {
        let t = ChatTemplate::new(
            "{{ v | tojson }}|{{ v | tojson(indent=2) }}|{{ v | tojson(separators=(',', ':'), sort_keys=true) }}|{{ 'é\u{1}' | tojson(ensure_ascii=true) }}|{{ [] | tojson(indent=2) }}",
        )
        .unwrap();
        let extra = serde_json::json!({"v": {"b": [1, 2.5, null, true], "a": "x<\"y\">"}});
        let out = t.render(&[], false, &extra).unwrap();
        assert_eq!(
            out,
            "{\"a\": \"x<\\\"y\\\">\", \"b\": [1, 2.5, null, true]}|{\n  \"a\": \"x<\\\"y\\\">\",\n  \"b\": [\n    1,\n    2.5,\n    null,\n    true\n  ]\n}|{\"a\":\"x<\\\"y\\\">\",\"b\":[1,2.5,null,true]}|\"\\u00e9\\u0001\"|[]"
        );
    }

    #[test]
    fn raise_exception_and_syntax_errors() {
        let t = ChatTemplate::new("{{ raise_exception('no ' + 'way') }}").unwrap();
        match t.render(&[], false, &serde_json::Value::Null) {
            Err(Error::Raised(msg)) => assert_eq!(msg, "no way"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            ChatTemplate::new("{% if %}"),
            Err(Error::Syntax(_))
        ));
        assert!(matches!(
            ChatTemplate::builtin("nope"),
            Err(Error::UnknownBuiltin(_))
        ));
        let t = ChatTemplate::new("{{ messages | length }}").unwrap();
        assert!(matches!(
            t.render(&[], false, &serde_json::json!([1])),
            Err(Error::Invalid(_))
        ));
    }

    #[test]
    fn message_serde() {
        let m: Message = serde_json::from_str(
            r#"{"role": "assistant", "content": null, "tool_calls": [{"type": "function"}], "reasoning_content": "hmm"}"#,
        )
        .unwrap();
        assert_eq!(m.content, "");
        assert_eq!(m.extra["reasoning_content"], "hmm");
        let m: Message = serde_json::from_str(
            r#"{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}"#,
        )
        .unwrap();
        assert_eq!(m.content, "a\nb");
        assert!(
            serde_json::from_str::<Message>(
                r#"{"role": "user", "content": [{"type": "image_url"}]}"#
            )
            .is_err()
        );
        let back = serde_json::to_value(Message::user("hi")).unwrap();
        assert_eq!(back, serde_json::json!({"role": "user", "content": "hi"}));
    }

    #[test]
    fn templates_are_shareable_across_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<ChatTemplate>();
    }

    #[test]
    fn strftime_now_uses_the_pinned_clock() {
        let t = ChatTemplate::new("{{ strftime_now('%d %b %Y') }}")
            .unwrap()
            .with_clock(1_741_356_309);
        assert_eq!(
            t.render(&[], false, &serde_json::Value::Null).unwrap(),
            "07 Mar 2025"
        );
    }
}
