//! `envs.json` read and written directly, without serde's generic
//! machinery: the file of every environment is the one that grows (3 MB at
//! 10,000 environments), and serde_json spent most of a big read skipping
//! its indentation a byte at a time and matching keys through visitors.
//!
//! Both halves only take the shape genv writes and are checked against
//! serde: [`parse`] answers `None` for anything it is not sure of (another
//! key, a duplicate key, a number that is not a plain integer, an escape in
//! a key), and the caller then parses with serde_json as before, so the
//! result is always what serde makes of the file; [`write`] writes the
//! bytes [`crate::output::json::to_json`] writes (two-space indent, non-ASCII as
//! `\u` escapes, as Python's `json.dump`).

use std::borrow::Cow;

use super::cursor::Cursor;
use super::envs::{Config, Env, Envs, Text};

/// The environments of a whole `envs.json` document, or `None` when the
/// document is not the plain current layout (or not JSON at all): serde
/// decides then.
pub fn parse(text: &str) -> Option<Envs> {
    let mut p = Parser {
        text,
        cursor: Cursor::new(text.as_bytes()),
    };
    p.cursor.expect(b'{')?;
    if p.key()? != "envs" {
        return None;
    }
    p.cursor.expect(b'[')?;
    // An environment is 200-300 bytes as written; a guess, not a limit.
    let mut envs = Vec::with_capacity(text.len() / 256);
    if !p.close(b']') {
        loop {
            envs.push(p.env()?);
            if p.next_or_close(b']')? {
                break;
            }
        }
    }
    p.cursor.expect(b'}')?;
    p.cursor.skip_space();
    (p.cursor.pos == p.cursor.bytes.len()).then_some(Envs { envs })
}

/// `envs` as [`crate::output::json::to_json`] writes it, appended to `out`.
pub fn write(envs: &Envs, out: &mut Vec<u8>) {
    if envs.envs.is_empty() {
        out.extend_from_slice(b"{\n  \"envs\": []\n}");
        return;
    }
    out.extend_from_slice(b"{\n  \"envs\": [\n");
    for (i, env) in envs.envs.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b",\n");
        }
        out.extend_from_slice(b"    {\n      \"eid\": ");
        string(out, &env.eid);
        out.extend_from_slice(b",\n      \"uid\": ");
        integer(out, env.uid);
        out.extend_from_slice(b",\n      \"creation\": ");
        string(out, &env.creation);
        out.extend_from_slice(b",\n      \"username\": ");
        optional(out, env.username.as_deref(), string);
        out.extend_from_slice(b",\n      \"config\": {\n        \"name\": ");
        optional(out, env.config.name.as_deref(), string);
        out.extend_from_slice(b",\n        \"gpu_memory\": ");
        optional(out, env.config.gpu_memory.as_deref(), string);
        out.extend_from_slice(b",\n        \"gpus\": ");
        optional(out, env.config.gpus, integer);
        out.extend_from_slice(b"\n      },\n      \"pids\": ");
        list(out, &env.pids, |out, pid| integer(out, *pid));
        out.extend_from_slice(b",\n      \"kernel_ids\": ");
        list(out, &env.kernel_ids, |out, id| string(out, id));
        out.extend_from_slice(b"\n    }");
    }
    out.extend_from_slice(b"\n  ]\n}");
}

fn optional<T>(out: &mut Vec<u8>, value: Option<T>, each: fn(&mut Vec<u8>, T)) {
    match value {
        Some(value) => each(out, value),
        None => out.extend_from_slice(b"null"),
    }
}

/// A list inside an environment (8 spaces deep), `[]` when empty.
fn list<T>(out: &mut Vec<u8>, items: &[T], each: impl Fn(&mut Vec<u8>, &T)) {
    if items.is_empty() {
        out.extend_from_slice(b"[]");
        return;
    }
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        out.extend_from_slice(if i == 0 {
            b"\n        "
        } else {
            b",\n        "
        });
        each(out, item);
    }
    out.extend_from_slice(b"\n      ]");
}

fn integer(out: &mut Vec<u8>, value: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// A JSON string as Python writes it with `ensure_ascii`: `"` and `\`
/// escaped, control characters as `\n`-style or `\u00XX` escapes, and
/// DEL and every non-ASCII character as `\uXXXX` (a surrogate pair above
/// U+FFFF).
fn string(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    if text
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        out.extend_from_slice(text.as_bytes());
    } else {
        for c in text.chars() {
            match c {
                '"' => out.extend_from_slice(b"\\\""),
                '\\' => out.extend_from_slice(b"\\\\"),
                '\n' => out.extend_from_slice(b"\\n"),
                '\r' => out.extend_from_slice(b"\\r"),
                '\t' => out.extend_from_slice(b"\\t"),
                '\u{8}' => out.extend_from_slice(b"\\b"),
                '\u{c}' => out.extend_from_slice(b"\\f"),
                ' '..='~' => out.push(c as u8),
                _ => {
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        escape_unit(out, *unit);
                    }
                }
            }
        }
    }
    out.push(b'"');
}

fn escape_unit(out: &mut Vec<u8>, unit: u16) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.extend_from_slice(b"\\u");
    for shift in [12, 8, 4, 0] {
        out.push(HEX[usize::from((unit >> shift) & 0xf)]);
    }
}

struct Parser<'a> {
    text: &'a str,
    cursor: Cursor<'a>,
}

impl<'a> Parser<'a> {
    /// Takes `byte` if it comes next.
    fn close(&mut self, byte: u8) -> bool {
        self.cursor.expect(byte).is_some()
    }

    /// After an item: `Some(false)` for a comma (another item follows),
    /// `Some(true)` for `close`.
    fn next_or_close(&mut self, close: u8) -> Option<bool> {
        match self.cursor.peek()? {
            b',' => {
                self.cursor.pos += 1;
                Some(false)
            }
            b if b == close => {
                self.cursor.pos += 1;
                Some(true)
            }
            _ => None,
        }
    }

    /// A string, borrowed when it has no escape; one with escapes is handed
    /// to serde_json whole, which checks and decodes them.
    fn string(&mut self) -> Option<Cow<'a, str>> {
        self.cursor.expect(b'"')?;
        let start = self.cursor.pos;
        let mut escaped = false;
        loop {
            let byte = *self.cursor.bytes.get(self.cursor.pos)?;
            if !SPECIAL[usize::from(byte)] {
                self.cursor.pos += 1;
                continue;
            }
            match byte {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    self.cursor.pos += 2;
                }
                _ => return None, // a control character
            }
        }
        let end = self.cursor.pos;
        self.cursor.pos += 1;
        if escaped {
            serde_json::from_str(self.text.get(start - 1..end + 1)?)
                .ok()
                .map(Cow::Owned)
        } else {
            self.text.get(start..end).map(Cow::Borrowed)
        }
    }

    /// Takes `literal` if it comes next, exactly.
    fn literal(&mut self, literal: &[u8]) -> Option<()> {
        let end = self.cursor.pos + literal.len();
        (self.cursor.bytes.get(self.cursor.pos..end)? == literal).then(|| self.cursor.pos = end)
    }

    fn key(&mut self) -> Option<&'a str> {
        let Cow::Borrowed(key) = self.string()? else {
            return None;
        };
        self.cursor.expect(b':')?;
        Some(key)
    }

    fn text(&mut self) -> Option<Text> {
        self.string().map(|s| Text::from(s.as_ref()))
    }

    fn null(&mut self) -> bool {
        self.cursor.skip_space();
        self.literal(b"null").is_some()
    }

    fn optional<T>(&mut self, value: fn(&mut Self) -> Option<T>) -> Option<Option<T>> {
        if self.null() {
            Some(None)
        } else {
            value(self).map(Some)
        }
    }

    /// A plain integer in range; a fraction, an exponent, a leading zero or
    /// `-0` are left to serde.
    fn integer(&mut self) -> Option<i64> {
        let negative = self.cursor.peek()? == b'-';
        if negative {
            self.cursor.pos += 1;
        }
        let start = self.cursor.pos;
        let mut value: i64 = 0;
        while let Some(&digit @ b'0'..=b'9') = self.cursor.bytes.get(self.cursor.pos) {
            let digit = i64::from(digit - b'0');
            value = value.checked_mul(10)?;
            value = if negative {
                value.checked_sub(digit)?
            } else {
                value.checked_add(digit)?
            };
            self.cursor.pos += 1;
        }
        let digits = self.cursor.pos - start;
        let leading_zero = digits > 1 && self.cursor.bytes[start] == b'0';
        let more = matches!(
            self.cursor.bytes.get(self.cursor.pos),
            Some(b'.' | b'e' | b'E')
        );
        if digits == 0 || leading_zero || more || (negative && value == 0) {
            return None;
        }
        Some(value)
    }

    fn list<T>(&mut self, item: fn(&mut Self) -> Option<T>) -> Option<Vec<T>> {
        self.cursor.expect(b'[')?;
        let mut items = Vec::new();
        if !self.close(b']') {
            loop {
                items.push(item(self)?);
                if self.next_or_close(b']')? {
                    break;
                }
            }
        }
        Some(items)
    }

    /// The fields of an object, each through `field` (which answers `None`
    /// for a key it does not take or has seen before).
    fn object(&mut self, mut field: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        self.cursor.expect(b'{')?;
        if self.close(b'}') {
            return Some(());
        }
        loop {
            let key = self.key()?;
            field(self, key)?;
            if self.next_or_close(b'}')? {
                return Some(());
            }
        }
    }

    fn config(&mut self) -> Option<Config> {
        let (mut name, mut gpu_memory, mut gpus) = (None, None, None);
        self.object(|p, key| match key {
            "name" => once(&mut name, p.optional(Self::text)?),
            "gpu_memory" => once(&mut gpu_memory, p.optional(Self::text)?),
            "gpus" => once(&mut gpus, p.optional(Self::integer)?),
            _ => None,
        })?;
        Some(Config {
            name: name.flatten(),
            gpu_memory: gpu_memory.flatten(),
            gpus: gpus.flatten(),
        })
    }

    /// An environment laid out as genv and genv 1.4.3 write it (the keys
    /// in their order, indented by two spaces a level), its keys and line
    /// breaks matched as they are written rather than looked for; anything
    /// else is read by [`Self::env`].
    fn env_as_written(&mut self) -> Option<Env> {
        self.literal(b"{\n      \"eid\": ")?;
        let eid = self.text()?;
        self.literal(b",\n      \"uid\": ")?;
        let uid = self.integer()?;
        self.literal(b",\n      \"creation\": ")?;
        let creation = self.text()?;
        self.literal(b",\n      \"username\": ")?;
        let username = self.optional(Self::text)?;
        self.literal(b",\n      \"config\": {\n        \"name\": ")?;
        let name = self.optional(Self::text)?;
        self.literal(b",\n        \"gpu_memory\": ")?;
        let gpu_memory = self.optional(Self::text)?;
        self.literal(b",\n        \"gpus\": ")?;
        let gpus = self.optional(Self::integer)?;
        self.literal(b"\n      },\n      \"pids\": ")?;
        let pids = self.list(Self::integer)?;
        self.literal(b",\n      \"kernel_ids\": ")?;
        let kernel_ids = self.list(|p| p.string().map(Cow::into_owned))?;
        self.literal(b"\n    }")?;
        Some(Env {
            eid,
            uid,
            creation,
            username,
            config: Config {
                name,
                gpu_memory,
                gpus,
            },
            pids,
            kernel_ids,
        })
    }

    fn env(&mut self) -> Option<Env> {
        self.cursor.skip_space();
        let start = self.cursor.pos;
        if let Some(env) = self.env_as_written() {
            return Some(env);
        }
        self.cursor.pos = start;
        let (mut eid, mut uid, mut creation, mut username) = (None, None, None, None);
        let (mut config, mut pids, mut kernel_ids) = (None, None, None);
        self.object(|p, key| match key {
            "eid" => once(&mut eid, p.text()?),
            "uid" => once(&mut uid, p.integer()?),
            "creation" => once(&mut creation, p.text()?),
            "username" => once(&mut username, p.optional(Self::text)?),
            "config" => once(&mut config, p.config()?),
            "pids" => once(&mut pids, p.list(Self::integer)?),
            "kernel_ids" => once(
                &mut kernel_ids,
                p.list(|p| p.string().map(Cow::into_owned))?,
            ),
            _ => None,
        })?;
        Some(Env {
            eid: eid?,
            uid: uid?,
            creation: creation?,
            username: username.flatten(),
            config: config.unwrap_or_default(),
            pids: pids.unwrap_or_default(),
            kernel_ids: kernel_ids.unwrap_or_default(),
        })
    }
}

/// The bytes that end a plain run of a string: `"`, `\\` and the control
/// characters, which JSON does not allow unescaped.
static SPECIAL: [bool; 256] = {
    let mut special = [false; 256];
    let mut byte = 0;
    while byte < 0x20 {
        special[byte] = true;
        byte += 1;
    }
    special[b'"' as usize] = true;
    special[b'\\' as usize] = true;
    special
};

/// Fills `slot`, which must be empty: serde refuses a duplicate field.
fn once<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    slot.is_none().then(|| *slot = Some(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (xorshift), for reproducible
    /// random states and mutations.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn text(&mut self) -> Text {
            const PIECES: &[&str] = &[
                "a", "job", " ", "7", "\"", "\\", "\n", "\t", "\u{1}", "\u{1f}", "\u{7f}", "é",
                "☕", "𝄞", "/", "{", "]", ":", ",", "null", "\u{8}", "\u{c}", "\r",
            ];
            let mut text = Text::default();
            for _ in 0..self.below(6) {
                text.push_str(PIECES[self.below(PIECES.len())]);
            }
            text
        }

        fn option<T>(&mut self, value: impl FnOnce(&mut Self) -> T) -> Option<T> {
            (self.below(3) != 0).then(|| value(self))
        }

        fn integer(&mut self) -> i64 {
            match self.below(4) {
                0 => self.below(10) as i64,
                1 => -(self.below(100_000) as i64),
                2 => i64::MAX - self.below(3) as i64,
                _ => self.next() as i64,
            }
        }

        fn envs(&mut self) -> Envs {
            let envs = (0..self.below(8))
                .map(|_| Env {
                    eid: self.text(),
                    uid: self.integer(),
                    creation: self.text(),
                    username: self.option(Self::text),
                    config: Config {
                        name: self.option(Self::text),
                        gpu_memory: self.option(Self::text),
                        gpus: self.option(Self::integer),
                    },
                    pids: (0..self.below(4)).map(|_| self.integer()).collect(),
                    kernel_ids: (0..self.below(3)).map(|_| self.text().into()).collect(),
                })
                .collect();
            Envs { envs }
        }
    }

    #[test]
    fn writes_what_serde_writes_and_reads_it_back() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..2000 {
            let envs = rng.envs();
            let expected = crate::output::json::to_json(&envs).unwrap();
            let mut written = Vec::new();
            write(&envs, &mut written);
            assert_eq!(
                String::from_utf8_lossy(&written),
                String::from_utf8_lossy(&expected)
            );
            let text = std::str::from_utf8(&written).unwrap();
            assert_eq!(parse(text).as_ref(), Some(&envs), "{text}");
        }
    }

    /// Damaged, reordered and foreign documents: whatever the fast parser
    /// answers is what serde answers, and it never panics.
    #[test]
    fn never_disagrees_with_serde() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        const INSERTS: &[&str] = &[
            " ",
            ",",
            "]",
            "}",
            "\"",
            "\\",
            "null",
            "-",
            "0",
            "01",
            "1.5",
            "1e3",
            "-0",
            "\"eid\": \"x\",",
            "\"other\": 1,",
            "\u{1}",
            "é",
            "99999999999999999999",
            "\"pids\": [],",
            "{",
            "[",
        ];
        let mut accepted = 0;
        for _ in 0..20_000 {
            let mut text =
                String::from_utf8(crate::output::json::to_json(&rng.envs()).unwrap()).unwrap();
            for _ in 0..1 + rng.below(3) {
                let mut at = rng.below(text.len() + 1);
                while !text.is_char_boundary(at) {
                    at -= 1;
                }
                match rng.below(3) {
                    0 => text.insert_str(at, INSERTS[rng.below(INSERTS.len())]),
                    1 => {
                        let mut end = (at + 1 + rng.below(4)).min(text.len());
                        while !text.is_char_boundary(end) {
                            end += 1;
                        }
                        text.replace_range(at..end, "");
                    }
                    _ => text.truncate(at),
                }
            }
            let serde = serde_json::from_str::<Envs>(&text).ok();
            if let Some(fast) = parse(&text) {
                accepted += 1;
                assert_eq!(Some(fast), serde, "{text}");
            }
        }
        // The mutations leave many documents valid: the fast path took
        // some of them, so the comparison above did compare.
        assert!(accepted > 1000, "{accepted}");
    }

    #[test]
    fn leaves_other_shapes_to_serde() {
        let env = r#"{"eid": "a", "uid": 1, "creation": "t"}"#;
        for text in [
            format!(r#"{{"envs": [{env}], "more": 1}}"#),
            r#"{"envs": [{"eid": "a", "eid": "b", "uid": 1, "creation": "t"}]}"#.into(),
            r#"{"envs": [{"eid": "a", "uid": 1.0, "creation": "t"}]}"#.into(),
            r#"{"envs": [{"eid": "a", "uid": 1, "creation": "t", "x": 1}]}"#.into(),
            r#"{"envs": {"a": {"eid": "a", "uid": 1, "creation": "t"}}}"#.into(),
            r#"{"e\u006evs": []}"#.into(),
            format!(r#"{{"envs": [{env}]}} x"#),
        ] {
            assert_eq!(parse(&text), None, "{text}");
        }
        let full = format!(r#" {{"envs": [{env}, {env}]}} "#);
        assert_eq!(parse(&full), serde_json::from_str(&full).ok());
        assert_eq!(parse(&full).unwrap().envs.len(), 2);
    }
}
