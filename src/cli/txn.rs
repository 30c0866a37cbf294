//! The text format `rafter kv txn` reads, and its parser.
//!
//! Modeled on etcdctl's interactive `txn`: comparisons, then the operations
//! to run when all of them hold, then the operations to run otherwise. The
//! full description is [`FORMAT_HELP`], shown by `rafter kv txn --help`.

use anyhow::{Context, bail};
use rafter_proto::kv::compare::{CompareResult, CompareTarget, TargetUnion};
use rafter_proto::kv::request_op::Request;
use rafter_proto::kv::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};

use super::output::parse_lease_id;

/// The description of the format, for `--help`.
pub const FORMAT_HELP: &str = r#"Transaction format (from --file, or stdin):

  Three sections: comparisons, success operations, failure operations.
  Separate them with lines holding only `---`; if no such line appears,
  a blank line ends each section instead (like etcdctl). Lines starting
  with `#` are comments.

  Comparisons, all of which must hold for the success operations to run:
      value("KEY") = "VALUE"        also !=, >, <
      version("KEY") = 0            0: the key does not exist
      create("KEY") = 0             create revision
      mod("KEY") > 3                modification revision
      lease("KEY") = 694d77aa9e38   lease ID in hex, 0 for none

  Operations:
      put KEY VALUE [--lease ID]
      get KEY [--prefix]
      del KEY [--prefix]

  Keys and values are single words or "double-quoted" with the escapes
  \" \\ \n \t \r \0 and \xHH (any byte).

  Example:
      mod("config") = 12
      ---
      put config "new value"
      get config
      ---
      get config

Output: SUCCESS or FAILURE, then each operation's result after a blank
line: OK for put, key and value lines for get, the deleted count for del."#;

/// Parses a transaction in the format of [`FORMAT_HELP`].
pub fn parse(text: &str) -> anyhow::Result<TxnRequest> {
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.starts_with('#'))
        .collect();
    let dashed = lines.iter().any(|(_, l)| *l == "---");
    let mut sections: Vec<Vec<(usize, &str)>> = vec![Vec::new()];
    for (n, line) in lines {
        let separator = if dashed {
            line == "---"
        } else {
            line.is_empty()
        };
        if separator {
            sections.push(Vec::new());
        } else if !line.is_empty() {
            sections.last_mut().expect("never empty").push((n, line));
        }
    }
    if let Some(extra) = sections.iter().skip(3).find_map(|s| s.first()) {
        bail!(
            "line {}: a transaction has three sections (comparisons, success, failure); \
             this is a fourth",
            extra.0
        );
    }
    sections.resize_with(3, Vec::new);

    let mut txn = TxnRequest::default();
    for &(n, line) in &sections[0] {
        txn.compare
            .push(parse_compare(line).with_context(|| format!("line {n}: {line:?}"))?);
    }
    for (ops, section) in [
        (&mut txn.success, &sections[1]),
        (&mut txn.failure, &sections[2]),
    ] {
        for &(n, line) in section {
            ops.push(parse_op(line).with_context(|| format!("line {n}: {line:?}"))?);
        }
    }
    Ok(txn)
}

/// `target("key") op value`.
fn parse_compare(line: &str) -> anyhow::Result<Compare> {
    let mut lx = Lexer::new(line);
    let target_name = lx.word(&['(']);
    let target = match target_name.to_ascii_lowercase().as_str() {
        "value" => CompareTarget::Value,
        "version" => CompareTarget::Version,
        "create" => CompareTarget::Create,
        "mod" => CompareTarget::Mod,
        "lease" => CompareTarget::Lease,
        "put" | "get" | "del" | "delete" => bail!(
            "expected a comparison like value(\"k\") = \"v\" (an operation here means a missing \
             `---` or blank line before it)"
        ),
        other => bail!(
            "unknown comparison target {other:?}: expected value, version, create, mod or lease"
        ),
    };
    lx.expect('(')?;
    let key = lx.token(&[')'])?.context("missing key inside ( )")?;
    lx.expect(')')?;
    lx.skip_ws();
    let result = if lx.eat("!=") {
        CompareResult::NotEqual
    } else if lx.eat("==") || lx.eat("=") {
        CompareResult::Equal
    } else if lx.eat(">") {
        CompareResult::Greater
    } else if lx.eat("<") {
        CompareResult::Less
    } else {
        bail!("expected one of =, !=, >, < after the key");
    };
    if lx.rest.starts_with('=') && matches!(result, CompareResult::Greater | CompareResult::Less) {
        bail!(">= and <= are not supported: compare with > N-1 or < N+1 instead");
    }
    let value = lx.token(&[])?.context("missing value after the operator")?;
    lx.end()?;

    let number = || -> anyhow::Result<u64> {
        let text = String::from_utf8_lossy(&value);
        text.trim()
            .parse()
            .with_context(|| format!("expected a number, found {text:?}"))
    };
    let target_union = match target {
        CompareTarget::Value => TargetUnion::Value(value.clone()),
        CompareTarget::Version => TargetUnion::Version(number()?),
        CompareTarget::Create => TargetUnion::CreateRevision(number()?),
        CompareTarget::Mod => TargetUnion::ModRevision(number()?),
        CompareTarget::Lease => {
            TargetUnion::Lease(parse_lease_id(&String::from_utf8_lossy(&value))?)
        }
    };
    Ok(Compare {
        result: result as i32,
        target: target as i32,
        key,
        target_union: Some(target_union),
    })
}

/// `put k v [--lease ID]`, `get k [--prefix]`, `del k [--prefix]`.
fn parse_op(line: &str) -> anyhow::Result<RequestOp> {
    let mut lx = Lexer::new(line);
    let mut words = Vec::new();
    while let Some(t) = lx.token(&[])? {
        words.push(t);
    }
    let verb = String::from_utf8_lossy(words.first().map(Vec::as_slice).unwrap_or_default())
        .to_ascii_lowercase();
    let mut args = words.into_iter().skip(1);
    let mut positional = Vec::new();
    let mut prefix = false;
    let mut lease = 0;
    while let Some(a) = args.next() {
        match a.as_slice() {
            b"--prefix" if verb != "put" => prefix = true,
            b"--lease" if verb == "put" => {
                let id = args.next().context("--lease needs a lease ID")?;
                lease = parse_lease_id(&String::from_utf8_lossy(&id))?;
            }
            _ => positional.push(a),
        }
    }
    let request = match (verb.as_str(), positional.len()) {
        ("put", 2) => {
            let mut p = positional.into_iter();
            Request::RequestPut(PutRequest {
                key: p.next().unwrap_or_default(),
                value: p.next().unwrap_or_default(),
                lease,
                ..Default::default()
            })
        }
        ("get", 1) => Request::RequestRange(RangeRequest {
            key: positional.remove(0),
            prefix,
            ..Default::default()
        }),
        ("del" | "delete", 1) => Request::RequestDeleteRange(DeleteRangeRequest {
            key: positional.remove(0),
            prefix,
            ..Default::default()
        }),
        ("put", _) => bail!("usage: put KEY VALUE [--lease ID]"),
        ("get", _) => bail!("usage: get KEY [--prefix]"),
        ("del" | "delete", _) => bail!("usage: del KEY [--prefix]"),
        _ => bail!("unknown operation {verb:?}: expected put, get or del"),
    };
    Ok(RequestOp {
        request: Some(request),
    })
}

/// A cursor over one line: words, quoted strings, punctuation.
struct Lexer<'a> {
    rest: &'a str,
}

impl<'a> Lexer<'a> {
    fn new(line: &'a str) -> Self {
        Lexer { rest: line }
    }

    fn skip_ws(&mut self) {
        self.rest = self.rest.trim_start();
    }

    /// Consumes `s` if the input continues with it.
    fn eat(&mut self, s: &str) -> bool {
        match self.rest.strip_prefix(s) {
            Some(r) => {
                self.rest = r;
                true
            }
            None => false,
        }
    }

    fn expect(&mut self, c: char) -> anyhow::Result<()> {
        self.skip_ws();
        match self.rest.strip_prefix(c) {
            Some(r) => {
                self.rest = r;
                Ok(())
            }
            None => bail!("expected {c:?} at {:?}", self.rest),
        }
    }

    fn end(&mut self) -> anyhow::Result<()> {
        self.skip_ws();
        if !self.rest.is_empty() {
            bail!("unexpected {:?} at the end", self.rest);
        }
        Ok(())
    }

    /// A bare word up to whitespace or one of `stops`.
    fn word(&mut self, stops: &[char]) -> &'a str {
        self.skip_ws();
        let end = self
            .rest
            .find(|c: char| c.is_whitespace() || stops.contains(&c))
            .unwrap_or(self.rest.len());
        let (w, r) = self.rest.split_at(end);
        self.rest = r;
        w
    }

    /// The next bare word or quoted string, as bytes; `None` at the end.
    fn token(&mut self, stops: &[char]) -> anyhow::Result<Option<Vec<u8>>> {
        self.skip_ws();
        let Some(body) = self.rest.strip_prefix('"') else {
            let w = self.word(stops);
            return Ok((!w.is_empty()).then(|| w.as_bytes().to_vec()));
        };
        let mut out = Vec::new();
        let mut chars = body.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.rest = &body[i + 1..];
                    return Ok(Some(out));
                }
                '\\' => {
                    let (_, e) = chars.next().context("unfinished escape at the end")?;
                    match e {
                        'n' => out.push(b'\n'),
                        't' => out.push(b'\t'),
                        'r' => out.push(b'\r'),
                        '0' => out.push(0),
                        '"' | '\\' => out.push(e as u8),
                        'x' => {
                            let hex: String = (0..2)
                                .filter_map(|_| chars.next())
                                .map(|(_, c)| c)
                                .collect();
                            let b = u8::from_str_radix(&hex, 16).with_context(|| {
                                format!("bad escape \\x{hex}: expected two hex digits")
                            })?;
                            out.push(b);
                        }
                        other => bail!("unknown escape \\{other}"),
                    }
                }
                c => {
                    let mut buf = [0; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
        bail!("unterminated quoted string")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compare(line: &str) -> Compare {
        parse_compare(line).unwrap()
    }

    #[test]
    fn comparisons_parse() {
        let c = compare(r#"value("k") = "v 1""#);
        assert_eq!(c.key, b"k");
        assert_eq!(c.result, CompareResult::Equal as i32);
        assert_eq!(c.target_union, Some(TargetUnion::Value(b"v 1".to_vec())));

        let c = compare(r#"mod("k") > 3"#);
        assert_eq!(c.target, CompareTarget::Mod as i32);
        assert_eq!(c.result, CompareResult::Greater as i32);
        assert_eq!(c.target_union, Some(TargetUnion::ModRevision(3)));

        let c = compare(r#"version(k) != "0""#);
        assert_eq!(c.result, CompareResult::NotEqual as i32);
        assert_eq!(c.target_union, Some(TargetUnion::Version(0)));

        let c = compare(r#"create("k")<5"#);
        assert_eq!(c.result, CompareResult::Less as i32);
        assert_eq!(c.target_union, Some(TargetUnion::CreateRevision(5)));

        let c = compare(r#"lease("k") = 0x1f"#);
        assert_eq!(c.target_union, Some(TargetUnion::Lease(31)));
    }

    #[test]
    fn bad_comparisons_explain_themselves() {
        let err = parse_compare(r#"size("k") = 1"#).unwrap_err().to_string();
        assert!(err.contains("unknown comparison target"), "{err}");
        let err = parse_compare(r#"mod("k") = x"#).unwrap_err().to_string();
        assert!(err.contains("expected a number"), "{err}");
        assert!(parse_compare(r#"value("k") "v""#).is_err());
        let err = parse_compare(r#"mod("k") >= 3"#).unwrap_err().to_string();
        assert!(err.contains(">= and <= are not supported"), "{err}");
    }

    #[test]
    fn dashed_sections() {
        let txn =
            parse("# swap\nvalue(\"k\") = \"a\"\n---\nput k b\n\nget k --prefix\n---\ndel k\n")
                .unwrap();
        assert_eq!(txn.compare.len(), 1);
        assert_eq!(txn.success.len(), 2);
        assert_eq!(txn.failure.len(), 1);
        match &txn.success[1].request {
            Some(Request::RequestRange(r)) => assert!(r.prefix),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn blank_line_sections_like_etcdctl() {
        let txn = parse("mod(\"k\") = 0\n\nput k \"x\\x00y\" --lease 1f\n\nget k\n").unwrap();
        match &txn.success[0].request {
            Some(Request::RequestPut(p)) => {
                assert_eq!(p.value, b"x\0y");
                assert_eq!(p.lease, 31);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(txn.failure.len(), 1);
    }

    #[test]
    fn empty_compare_section() {
        let txn = parse("\nput k v\n").unwrap();
        assert!(txn.compare.is_empty());
        assert_eq!(txn.success.len(), 1);
    }

    #[test]
    fn errors_name_the_line() {
        let err = format!("{:#}", parse("put k v\n---\n").unwrap_err());
        assert!(err.starts_with("line 1:"), "{err}");
        let err = format!("{:#}", parse("---\nput k\n").unwrap_err());
        assert!(
            err.contains("line 2") && err.contains("usage: put"),
            "{err}"
        );
        assert!(parse("a\n---\nb\n---\nc\n---\nd\n").is_err());
    }
}
