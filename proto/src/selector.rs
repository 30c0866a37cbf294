//! Kubernetes label selectors (`app=web,tier in (frontend,cache),!canary`),
//! field selectors (`metadata.name=web-0,status.phase!=Running`) and the name
//! validations they rely on (label keys and values, RFC 1123 names).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

/// Longest label value, and longest name part of a label key.
const LABEL_MAX_LEN: usize = 63;
/// Longest RFC 1123 subdomain (and label-key prefix).
const DNS1123_SUBDOMAIN_MAX_LEN: usize = 253;
/// Longest RFC 1123 label.
const DNS1123_LABEL_MAX_LEN: usize = 63;

const QUALIFIED_NAME_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and \
     must start and end with an alphanumeric character (e.g. 'MyName', 'my.name' or '123-abc')";
const LABEL_VALUE_MSG: &str = "a valid label value must be an empty string or consist of \
     alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric \
     character (e.g. 'MyValue', 'my_value' or '12345')";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case \
     alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character \
     (e.g. 'example.com')";
const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case \
     alphanumeric characters or '-', and must start and end with an alphanumeric character \
     (e.g. 'my-name' or '123-abc')";

/// An error building a [`LabelSelector`] or [`FieldSelector`]; the message
/// names the offending part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// The selector string does not follow the grammar.
    #[error("invalid {kind} selector {input:?} at byte {position}: {message}")]
    Syntax {
        /// `"label"` or `"field"`.
        kind: &'static str,
        /// The whole selector string.
        input: String,
        /// Byte offset of the problem within `input`.
        position: usize,
        /// What was found and what was expected there.
        message: String,
    },
    /// A label key is not a valid qualified name.
    #[error("invalid label key {key:?} in selector: {reason}")]
    InvalidKey {
        /// The key.
        key: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A label value is not valid.
    #[error("invalid value {value:?} for label key {key:?} in selector: {reason}")]
    InvalidValue {
        /// The key the value belongs to.
        key: String,
        /// The value.
        value: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A structured match expression uses an operator other than
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    #[error(
        "unknown operator {operator:?} in match expression for key {key:?}: use one of In, \
         NotIn, Exists or DoesNotExist"
    )]
    UnknownOperator {
        /// The key of the expression.
        key: String,
        /// The operator given.
        operator: String,
    },
    /// An `In` or `NotIn` expression has no values.
    #[error(
        "match expression for key {key:?} with operator {operator}: values must be non-empty \
         when the operator is In or NotIn"
    )]
    MissingValues {
        /// The key of the expression.
        key: String,
        /// The operator (`In` or `NotIn`).
        operator: Operator,
    },
    /// An `Exists` or `DoesNotExist` expression has values.
    #[error(
        "match expression for key {key:?} with operator {operator}: values must be empty when \
         the operator is Exists or DoesNotExist"
    )]
    UnexpectedValues {
        /// The key of the expression.
        key: String,
        /// The operator (`Exists` or `DoesNotExist`).
        operator: Operator,
    },
    /// An `Equals` or `NotEquals` requirement does not have exactly one value.
    #[error(
        "requirement for key {key:?} with operator {operator}: exactly one value is required \
         for Equals and NotEquals; use In or NotIn for several"
    )]
    WrongValueCount {
        /// The key of the requirement.
        key: String,
        /// The operator (`Equals` or `NotEquals`).
        operator: Operator,
    },
    /// A field selector names a field the resource does not support.
    #[error("field selector {input:?}: field {field:?} is not supported; {supported}")]
    UnsupportedField {
        /// The whole selector string.
        input: String,
        /// The unknown field.
        field: String,
        /// The supported fields, as a sentence.
        supported: String,
    },
}

// ---------------------------------------------------------------------------
// Name validation
// ---------------------------------------------------------------------------

fn is_alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`, non-empty.
fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(&first), Some(&last)) => {
            is_alnum(first)
                && is_alnum(last)
                && b.iter()
                    .all(|&c| is_alnum(c) || matches!(c, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, non-empty.
fn is_dns1123_label_chars(s: &str) -> bool {
    let lower_alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(&first), Some(&last)) => {
            lower_alnum(first)
                && lower_alnum(last)
                && b.iter().all(|&c| lower_alnum(c) || c == b'-')
        }
        _ => false,
    }
}

fn join_errors(errors: Vec<String>) -> Result<(), String> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// Checks a label (or annotation) key: an optional DNS-subdomain prefix and
/// `/`, then a name of at most 63 characters matching
/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?` (e.g. `app`,
/// `app.kubernetes.io/name`).
///
/// The error lists every problem found, separated by `"; "`, each prefixed
/// with the part it concerns (`"prefix part ..."`, `"name part ..."`).
pub fn validate_label_key(key: &str) -> Result<(), String> {
    let mut errors = Vec::new();
    let name = match key.split_once('/') {
        None => key,
        Some((_, name)) if name.contains('/') => {
            return Err(format!(
                "a qualified name {QUALIFIED_NAME_MSG}, with an optional DNS subdomain prefix \
                 and a single '/' (e.g. 'example.com/MyName')"
            ));
        }
        Some((prefix, name)) => {
            if prefix.is_empty() {
                errors.push("prefix part must be non-empty".to_string());
            } else if let Err(e) = validate_dns1123_subdomain(prefix) {
                errors.extend(e.split("; ").map(|m| format!("prefix part {m}")));
            }
            name
        }
    };
    if name.is_empty() {
        errors.push("name part must be non-empty".to_string());
    } else {
        if name.len() > LABEL_MAX_LEN {
            errors.push(format!(
                "name part must be no more than {LABEL_MAX_LEN} characters"
            ));
        }
        if !is_qualified_name_part(name) {
            errors.push(format!("name part {QUALIFIED_NAME_MSG}"));
        }
    }
    join_errors(errors)
}

/// Checks a label value: empty, or at most 63 characters matching
/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`.
pub fn validate_label_value(value: &str) -> Result<(), String> {
    let mut errors = Vec::new();
    if value.len() > LABEL_MAX_LEN {
        errors.push(format!("must be no more than {LABEL_MAX_LEN} characters"));
    }
    if !value.is_empty() && !is_qualified_name_part(value) {
        errors.push(LABEL_VALUE_MSG.to_string());
    }
    join_errors(errors)
}

/// Checks an RFC 1123 subdomain (the form of most object names): at most 253
/// characters, dot-separated labels of lower case alphanumerics and `-`, each
/// starting and ending with an alphanumeric (e.g. `example.com`).
pub fn validate_dns1123_subdomain(name: &str) -> Result<(), String> {
    let mut errors = Vec::new();
    if name.len() > DNS1123_SUBDOMAIN_MAX_LEN {
        errors.push(format!(
            "must be no more than {DNS1123_SUBDOMAIN_MAX_LEN} characters"
        ));
    }
    if !name.split('.').all(is_dns1123_label_chars) {
        errors.push(DNS1123_SUBDOMAIN_MSG.to_string());
    }
    join_errors(errors)
}

/// Checks an RFC 1123 label (the form of namespace names): at most 63
/// characters of lower case alphanumerics and `-`, starting and ending with
/// an alphanumeric (e.g. `my-name`).
pub fn validate_dns1123_label(name: &str) -> Result<(), String> {
    let mut errors = Vec::new();
    if name.len() > DNS1123_LABEL_MAX_LEN {
        errors.push(format!(
            "must be no more than {DNS1123_LABEL_MAX_LEN} characters"
        ));
    }
    if !is_dns1123_label_chars(name) {
        errors.push(DNS1123_LABEL_MSG.to_string());
    }
    join_errors(errors)
}

// ---------------------------------------------------------------------------
// Label selectors
// ---------------------------------------------------------------------------

/// How a label [`Requirement`] compares a label with its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operator {
    /// `key=value` or `key==value`: the label is present and equals the value.
    Equals,
    /// `key!=value`: the label is absent or differs from the value.
    NotEquals,
    /// `key in (v1,v2)`: the label is present and equals one of the values.
    In,
    /// `key notin (v1,v2)`: the label is absent or equals none of the values.
    NotIn,
    /// `key`: the label is present, whatever its value.
    Exists,
    /// `!key`: the label is absent.
    DoesNotExist,
}

impl fmt::Display for Operator {
    /// Prints the structured (matchExpressions) spelling: `In`, `NotIn`, ...
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operator::Equals => "Equals",
            Operator::NotEquals => "NotEquals",
            Operator::In => "In",
            Operator::NotIn => "NotIn",
            Operator::Exists => "Exists",
            Operator::DoesNotExist => "DoesNotExist",
        })
    }
}

/// One condition of a [`LabelSelector`] on one label key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Requirement {
    key: String,
    operator: Operator,
    values: BTreeSet<String>,
}

impl Requirement {
    /// Builds a validated requirement. `Equals`/`NotEquals` need exactly one
    /// value, `In`/`NotIn` at least one, `Exists`/`DoesNotExist` none.
    pub fn new(
        key: &str,
        operator: Operator,
        values: impl IntoIterator<Item = impl Into<String>>,
    ) -> Result<Self, SelectorError> {
        validate_label_key(key).map_err(|reason| SelectorError::InvalidKey {
            key: key.to_string(),
            reason,
        })?;
        let values: BTreeSet<String> = values.into_iter().map(Into::into).collect();
        for value in &values {
            validate_label_value(value).map_err(|reason| SelectorError::InvalidValue {
                key: key.to_string(),
                value: value.clone(),
                reason,
            })?;
        }
        let key_string = key.to_string();
        match operator {
            Operator::In | Operator::NotIn if values.is_empty() => {
                return Err(SelectorError::MissingValues {
                    key: key_string,
                    operator,
                });
            }
            Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                return Err(SelectorError::UnexpectedValues {
                    key: key_string,
                    operator,
                });
            }
            Operator::Equals | Operator::NotEquals if values.len() != 1 => {
                return Err(SelectorError::WrongValueCount {
                    key: key_string,
                    operator,
                });
            }
            _ => {}
        }
        Ok(Requirement {
            key: key_string,
            operator,
            values,
        })
    }

    /// The label key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The operator.
    pub fn operator(&self) -> Operator {
        self.operator
    }

    /// The values, sorted and without duplicates (empty for `Exists` and
    /// `DoesNotExist`).
    pub fn values(&self) -> &BTreeSet<String> {
        &self.values
    }

    /// Whether `labels` satisfy this requirement. `NotEquals` and `NotIn`
    /// match objects that lack the label, as in Kubernetes.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            Operator::Equals | Operator::In => value.is_some_and(|v| self.values.contains(v)),
            Operator::NotEquals | Operator::NotIn => {
                !value.is_some_and(|v| self.values.contains(v))
            }
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }
}

impl fmt::Display for Requirement {
    /// Prints the string-syntax form: `a=b`, `a!=b`, `a in (x,y)`,
    /// `a notin (x,y)`, `a`, `!a`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let first = || self.values.iter().next().map(String::as_str).unwrap_or("");
        let list = || {
            self.values
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(",")
        };
        match self.operator {
            Operator::Equals => write!(f, "{}={}", self.key, first()),
            Operator::NotEquals => write!(f, "{}!={}", self.key, first()),
            Operator::In => write!(f, "{} in ({})", self.key, list()),
            Operator::NotIn => write!(f, "{} notin ({})", self.key, list()),
            Operator::Exists => write!(f, "{}", self.key),
            Operator::DoesNotExist => write!(f, "!{}", self.key),
        }
    }
}

/// A conjunction of label [`Requirement`]s; the empty selector matches every
/// object.
///
/// Parsed from the string syntax used by `kubectl -l` and `?labelSelector=`:
/// comma-separated requirements `key=value`, `key==value`, `key!=value`,
/// `key in (v1,v2)`, `key notin (v1,v2)`, `key` (exists) and `!key` (does
/// not exist), with whitespace allowed around tokens. Displaying a selector
/// gives its canonical string: requirements sorted by key, set values sorted
/// and de-duplicated, `==` written as `=`, no optional whitespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// The selector that matches everything.
    pub fn everything() -> Self {
        LabelSelector::default()
    }

    /// Parses the string syntax (see the type documentation). An empty or
    /// all-whitespace string gives the selector that matches everything.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut parser = Parser { input: s, pos: 0 };
        let mut requirements = Vec::new();
        parser.skip_ws();
        if parser.at_end() {
            return Ok(LabelSelector::everything());
        }
        loop {
            requirements.push(parser.requirement()?);
            parser.skip_ws();
            match parser.peek() {
                None => break,
                Some(',') => parser.pos += 1,
                Some(c) => {
                    return Err(
                        parser.error(format!("found '{c}', expected ',' or end of selector"))
                    );
                }
            }
        }
        Ok(Self::from_requirements(requirements))
    }

    /// Builds a selector from the structured form of a Kubernetes
    /// `LabelSelector`: `matchLabels` (each an equality requirement) and
    /// `matchExpressions` as `(key, operator, values)` with operator `In`,
    /// `NotIn`, `Exists` or `DoesNotExist`.
    ///
    /// Both empty gives the selector that matches everything (a *missing*
    /// selector, which in Kubernetes usually matches nothing, is for the
    /// caller to handle).
    pub fn from_parts(
        match_labels: &BTreeMap<String, String>,
        match_expressions: &[(String, String, Vec<String>)],
    ) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for (key, value) in match_labels {
            requirements.push(Requirement::new(key, Operator::Equals, [value.as_str()])?);
        }
        for (key, operator, values) in match_expressions {
            let operator = match operator.as_str() {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                _ => {
                    return Err(SelectorError::UnknownOperator {
                        key: key.clone(),
                        operator: operator.clone(),
                    });
                }
            };
            requirements.push(Requirement::new(
                key,
                operator,
                values.iter().map(String::as_str),
            )?);
        }
        Ok(Self::from_requirements(requirements))
    }

    /// A selector requiring all of `requirements`.
    pub fn from_requirements(mut requirements: Vec<Requirement>) -> Self {
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        LabelSelector { requirements }
    }

    /// The requirements, sorted by key.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// Whether this selector has no requirements and so matches everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }
}

impl FromStr for LabelSelector {
    type Err = SelectorError;

    /// Same as [`LabelSelector::parse`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LabelSelector::parse(s)
    }
}

impl fmt::Display for LabelSelector {
    /// The canonical string form; empty for the selector matching everything.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// Recursive-descent parser over the label selector string.
struct Parser<'a> {
    input: &'a str,
    pos: usize,
}

/// Characters that end an identifier (besides whitespace).
const SPECIAL: &[char] = &[',', '(', ')', '=', '!', '<', '>'];

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.input[self.pos..].chars().next()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.input.len()
    }

    fn skip_ws(&mut self) {
        let rest = &self.input[self.pos..];
        self.pos += rest.len() - rest.trim_start().len();
    }

    fn error(&self, message: String) -> SelectorError {
        SelectorError::Syntax {
            kind: "label",
            input: self.input.to_string(),
            position: self.pos,
            message,
        }
    }

    fn found(&self) -> String {
        match self.peek() {
            None => "end of selector".to_string(),
            Some(c) => format!("'{c}'"),
        }
    }

    /// Reads a run of non-special, non-whitespace characters (maybe empty).
    fn word(&mut self) -> &str {
        let rest = &self.input[self.pos..];
        let len = rest
            .find(|c: char| c.is_whitespace() || SPECIAL.contains(&c))
            .unwrap_or(rest.len());
        self.pos += len;
        &rest[..len]
    }

    fn key(&mut self) -> Result<String, SelectorError> {
        self.skip_ws();
        let start = self.pos;
        let key = self.word().to_string();
        if key.is_empty() {
            self.pos = start;
            return Err(self.error(format!("found {}, expected a label key", self.found())));
        }
        validate_label_key(&key).map_err(|reason| SelectorError::InvalidKey {
            key: key.clone(),
            reason,
        })?;
        Ok(key)
    }

    fn value(&mut self, key: &str) -> Result<String, SelectorError> {
        self.skip_ws();
        let value = self.word().to_string();
        validate_label_value(&value).map_err(|reason| SelectorError::InvalidValue {
            key: key.to_string(),
            value: value.clone(),
            reason,
        })?;
        Ok(value)
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        self.skip_ws();
        if self.peek() == Some('!') {
            self.pos += 1;
            let key = self.key()?;
            return Ok(Requirement {
                key,
                operator: Operator::DoesNotExist,
                values: BTreeSet::new(),
            });
        }
        let key = self.key()?;
        self.skip_ws();
        let rest = &self.input[self.pos..];
        let (operator, op_len) = if rest.starts_with("==") {
            (Operator::Equals, 2)
        } else if rest.starts_with("!=") {
            (Operator::NotEquals, 2)
        } else if rest.starts_with('=') {
            (Operator::Equals, 1)
        } else if rest.is_empty() || rest.starts_with(',') {
            return Ok(Requirement {
                key,
                operator: Operator::Exists,
                values: BTreeSet::new(),
            });
        } else {
            let start = self.pos;
            let operator = match self.word() {
                "in" => Operator::In,
                "notin" => Operator::NotIn,
                _ => {
                    self.pos = start;
                    return Err(self.error(format!(
                        "found {} after key '{key}', expected '=', '==', '!=', 'in', 'notin', \
                         ',' or end of selector",
                        self.found()
                    )));
                }
            };
            let values = self.value_set(&key)?;
            return Ok(Requirement {
                key,
                operator,
                values,
            });
        };
        self.pos += op_len;
        let value = self.value(&key)?;
        Ok(Requirement {
            key,
            operator,
            values: BTreeSet::from([value]),
        })
    }

    /// Parses `( v1, v2, ... )`. As in Kubernetes, empty entries are the
    /// empty value, so `()` is the set holding just `""`.
    fn value_set(&mut self, key: &str) -> Result<BTreeSet<String>, SelectorError> {
        self.skip_ws();
        if self.peek() != Some('(') {
            return Err(self.error(format!(
                "found {} after 'in'/'notin' for key '{key}', expected '(' starting a value list",
                self.found()
            )));
        }
        self.pos += 1;
        let mut values = BTreeSet::new();
        loop {
            values.insert(self.value(key)?);
            self.skip_ws();
            match self.peek() {
                Some(',') => self.pos += 1,
                Some(')') => {
                    self.pos += 1;
                    return Ok(values);
                }
                _ => {
                    return Err(self.error(format!(
                        "found {} in the value list for key '{key}', expected ',' or ')'",
                        self.found()
                    )));
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Field selectors
// ---------------------------------------------------------------------------

/// One condition of a [`FieldSelector`]: `field=value` or `field!=value`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FieldRequirement {
    field: String,
    negated: bool,
    value: String,
}

impl FieldRequirement {
    /// The field name, e.g. `metadata.name`.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// The value compared against.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// `true` for `!=`, `false` for `=`/`==`.
    pub fn is_negated(&self) -> bool {
        self.negated
    }
}

impl fmt::Display for FieldRequirement {
    /// `field=value` or `field!=value`, with `\`, `,` and `=` in the value
    /// escaped by a backslash.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = if self.negated { "!=" } else { "=" };
        write!(f, "{}{op}", self.field)?;
        for c in self.value.chars() {
            if matches!(c, '\\' | ',' | '=') {
                f.write_str("\\")?;
            }
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

/// A conjunction of field equalities, as in `?fieldSelector=` and
/// `kubectl --field-selector`: comma-separated `field=value`, `field==value`
/// or `field!=value`. The empty selector matches everything.
///
/// In values, `\,`, `\=` and `\\` stand for `,`, `=` and `\`; an unescaped
/// `,` separates terms, an unescaped `=` in a value is an error. Whitespace
/// around field names and values is ignored, as are empty terms (`a=b,,`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct FieldSelector {
    requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    /// The selector that matches everything.
    pub fn everything() -> Self {
        FieldSelector::default()
    }

    /// Parses `s`, accepting only fields listed in `supported` (e.g.
    /// `&["metadata.name", "metadata.namespace"]`); any other field is an
    /// error naming the supported ones.
    pub fn parse(s: &str, supported: &[&str]) -> Result<Self, SelectorError> {
        let syntax = |position: usize, message: String| SelectorError::Syntax {
            kind: "field",
            input: s.to_string(),
            position,
            message,
        };
        let mut requirements = Vec::new();
        for (start, term) in split_unescaped(s, ',') {
            if term.trim().is_empty() {
                continue;
            }
            let (field, negated, raw_value, value_start) = split_field_term(term)
                .map(|(f, n, v, off)| (f, n, v, start + off))
                .ok_or_else(|| {
                    syntax(
                        start,
                        format!(
                            "term {:?} has no operator; write 'field=value', 'field==value' \
                             or 'field!=value'",
                            term.trim()
                        ),
                    )
                })?;
            let field = field.trim();
            if field.is_empty() {
                return Err(syntax(
                    start,
                    format!("term {:?} has no field name", term.trim()),
                ));
            }
            if !supported.contains(&field) {
                let supported = if supported.is_empty() {
                    "this resource supports no field selectors".to_string()
                } else {
                    format!("supported fields: {}", supported.join(", "))
                };
                return Err(SelectorError::UnsupportedField {
                    input: s.to_string(),
                    field: field.to_string(),
                    supported,
                });
            }
            let value = unescape_value(raw_value.trim())
                .map_err(|(offset, message)| syntax(value_start + offset, message))?;
            requirements.push(FieldRequirement {
                field: field.to_string(),
                negated,
                value,
            });
        }
        Ok(FieldSelector { requirements })
    }

    /// The requirements, in the order written.
    pub fn requirements(&self) -> &[FieldRequirement] {
        &self.requirements
    }

    /// Whether this selector has no requirements and so matches everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The value `field` must equal if the selector contains `field=value`
    /// (useful to turn `metadata.name=x` into a direct lookup).
    pub fn requires_exact_match(&self, field: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| !r.negated && r.field == field)
            .map(|r| r.value.as_str())
    }

    /// Whether an object satisfies every requirement; `get` returns the value
    /// of a field by name. A field for which `get` returns `None` counts as
    /// the empty string (so `f=` matches it and `f!=x` matches it).
    pub fn matches(&self, get: impl Fn(&str) -> Option<String>) -> bool {
        self.requirements.iter().all(|r| {
            let actual = get(&r.field).unwrap_or_default();
            (actual == r.value) != r.negated
        })
    }
}

impl fmt::Display for FieldSelector {
    /// The canonical string: terms in order, `==` written as `=`, values escaped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// Splits `s` at occurrences of `sep` not preceded by an escaping backslash,
/// yielding each piece with its byte offset.
fn split_unescaped(s: &str, sep: char) -> Vec<(usize, &str)> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            pieces.push((start, &s[start..i]));
            start = i + c.len_utf8();
        }
    }
    pieces.push((start, &s[start..]));
    pieces
}

/// Splits a term at its first operator: (field, negated, raw value, value offset).
fn split_field_term(term: &str) -> Option<(&str, bool, &str, usize)> {
    let i = term.find(['=', '!'].as_slice())?;
    let rest = &term[i..];
    let (negated, len) = if rest.starts_with("!=") {
        (true, 2)
    } else if rest.starts_with("==") {
        (false, 2)
    } else if rest.starts_with('=') {
        (false, 1)
    } else {
        return None;
    };
    Some((&term[..i], negated, &term[i + len..], i + len))
}

/// Resolves `\\`, `\,` and `\=`; rejects other escapes and a bare `=`.
fn unescape_value(raw: &str) -> Result<String, (usize, String)> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, e @ ('\\' | ',' | '='))) => out.push(e),
                Some((_, e)) => {
                    return Err((
                        i,
                        format!(
                            "invalid escape '\\{e}' in value; only '\\\\', '\\,' and '\\=' are allowed"
                        ),
                    ));
                }
                None => {
                    return Err((
                        i,
                        "value ends with a lone '\\'; write '\\\\' for a backslash".to_string(),
                    ));
                }
            },
            '=' => {
                return Err((
                    i,
                    "unescaped '=' in value; write '\\=' for a literal '='".to_string(),
                ));
            }
            _ => out.push(c),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn sel(s: &str) -> LabelSelector {
        LabelSelector::parse(s).unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
    }

    #[test]
    fn label_key_validation() {
        for ok in [
            "a",
            "app",
            "A",
            "1",
            "my.name",
            "my_name",
            "MyName",
            "123-abc",
            "app.kubernetes.io/name",
            "example.com/MyName",
            "a/b",
            &"a".repeat(63),
            &format!("{}/{}", "a".repeat(253), "b".repeat(63)),
        ] {
            assert_eq!(validate_label_key(ok), Ok(()), "{ok:?}");
        }
        let name_msg = "name part must consist of alphanumeric characters, '-', '_' or '.', and \
                        must start and end with an alphanumeric character";
        for (bad, want) in [
            ("", "name part must be non-empty"),
            ("-a", name_msg),
            ("a-", name_msg),
            ("_a", name_msg),
            ("a b", name_msg),
            ("a:b", name_msg),
            ("é", name_msg),
            ("a/", "name part must be non-empty"),
            ("/a", "prefix part must be non-empty"),
            (
                "a/b/c",
                "with an optional DNS subdomain prefix and a single '/'",
            ),
            (
                "Example.com/a",
                "prefix part a lowercase RFC 1123 subdomain must consist",
            ),
            ("-x.com/a", "prefix part a lowercase RFC 1123 subdomain"),
            (
                &"a".repeat(64),
                "name part must be no more than 63 characters",
            ),
            (
                &format!("{}/a", "a".repeat(254)),
                "prefix part must be no more than 253 characters",
            ),
        ] {
            let err = validate_label_key(bad).expect_err(bad);
            assert!(err.contains(want), "{bad:?}: {err}");
        }
        // Several problems are all reported.
        let err = validate_label_key(&format!("-{}", "a".repeat(63))).unwrap_err();
        assert!(
            err.contains("no more than 63") && err.contains("must start and end"),
            "{err}"
        );
    }

    #[test]
    fn label_value_validation() {
        for ok in [
            "",
            "a",
            "MyValue",
            "my_value",
            "12345",
            "a.b-c_d",
            &"v".repeat(63),
        ] {
            assert_eq!(validate_label_value(ok), Ok(()), "{ok:?}");
        }
        for bad in ["-a", "a-", ".", "a b", "a/b", "a=b", "ü"] {
            let err = validate_label_value(bad).expect_err(bad);
            assert!(
                err.contains("must start and end with an alphanumeric character"),
                "{err}"
            );
        }
        let err = validate_label_value(&"v".repeat(64)).unwrap_err();
        assert_eq!(err, "must be no more than 63 characters");
    }

    #[test]
    fn dns1123_validation() {
        for ok in [
            "a",
            "example.com",
            "a-b.c-d",
            "0",
            "1.2.3",
            "my-name",
            &"a".repeat(253),
        ] {
            assert_eq!(validate_dns1123_subdomain(ok), Ok(()), "{ok:?}");
        }
        for bad in [
            "",
            "A",
            "Example.com",
            "a..b",
            ".a",
            "a.",
            "-a",
            "a-",
            "a.-b",
            "a_b",
            "a b",
        ] {
            let err = validate_dns1123_subdomain(bad).expect_err(bad);
            assert!(
                err.starts_with("a lowercase RFC 1123 subdomain must consist"),
                "{err}"
            );
            assert!(err.contains("(e.g. 'example.com')"), "{err}");
        }
        assert_eq!(
            validate_dns1123_subdomain(&"a".repeat(254)),
            Err("must be no more than 253 characters".to_string())
        );

        for ok in ["a", "my-name", "123-abc", "0", &"a".repeat(63)] {
            assert_eq!(validate_dns1123_label(ok), Ok(()), "{ok:?}");
        }
        for bad in ["", "A", "a.b", "-a", "a-", "a_b"] {
            let err = validate_dns1123_label(bad).expect_err(bad);
            assert!(
                err.starts_with("a lowercase RFC 1123 label must consist"),
                "{err}"
            );
        }
        assert_eq!(
            validate_dns1123_label(&"a".repeat(64)),
            Err("must be no more than 63 characters".to_string())
        );
    }

    #[test]
    fn parse_and_display() {
        // (input, canonical form)
        let cases = [
            ("", ""),
            ("   ", ""),
            ("a=b", "a=b"),
            ("a==b", "a=b"),
            ("a!=b", "a!=b"),
            ("a=", "a="),
            ("a!=", "a!="),
            (" a = b ", "a=b"),
            ("a in (x,y)", "a in (x,y)"),
            ("a in (y, x, y)", "a in (x,y)"),
            ("a in(x)", "a in (x)"),
            ("a notin (x, y)", "a notin (x,y)"),
            ("a notin ( x , y )", "a notin (x,y)"),
            ("a in ()", "a in ()"),
            ("a in (x,)", "a in (,x)"),
            ("a", "a"),
            ("!a", "!a"),
            ("! a", "!a"),
            ("b=1,a=2", "a=2,b=1"),
            (
                "z, !y, x in (1,2), w notin (3), v!=4, u==5, t=6",
                "t=6,u=5,v!=4,w notin (3),x in (1,2),!y,z",
            ),
            (
                "app.kubernetes.io/name=web,tier in (frontend,cache),!canary",
                "app.kubernetes.io/name=web,!canary,tier in (cache,frontend)",
            ),
            ("in=x", "in=x"),
            ("a=in", "a=in"),
            ("a in (in,notin)", "a in (in,notin)"),
            ("a=b,a!=c", "a=b,a!=c"),
        ];
        for (input, canonical) in cases {
            let s = sel(input);
            assert_eq!(s.to_string(), canonical, "{input:?}");
            assert_eq!(sel(canonical), s, "round trip of {canonical:?}");
            assert_eq!(sel(canonical).to_string(), canonical);
            assert_eq!(input.parse::<LabelSelector>(), Ok(s));
        }
        assert!(sel("").is_empty());
        assert_eq!(sel("a in (x)").requirements()[0].operator(), Operator::In);
        assert_eq!(sel("!a").requirements()[0].key(), "a");
    }

    #[test]
    fn matching() {
        let web = labels(&[("app", "web"), ("tier", "frontend"), ("env", "")]);
        let db = labels(&[("app", "db")]);
        let none = labels(&[]);
        // (selector, matches web, matches db, matches none)
        let cases = [
            ("", true, true, true),
            ("app=web", true, false, false),
            ("app==web", true, false, false),
            ("app!=web", false, true, true),
            ("tier!=backend", true, true, true),
            ("app in (web,db)", true, true, false),
            ("app in (cache)", false, false, false),
            ("app notin (web)", false, true, true),
            ("tier notin (backend)", true, true, true),
            ("app", true, true, false),
            ("tier", true, false, false),
            ("!tier", false, true, true),
            ("env", true, false, false),
            ("env=", true, false, false),
            ("env in ()", true, false, false),
            ("env!=", false, true, true),
            ("app=web,tier=frontend", true, false, false),
            ("app=web,tier=backend", false, false, false),
            ("app,!tier", false, true, false),
            ("App=web", false, false, false),
        ];
        for (s, w, d, n) in cases {
            let selector = sel(s);
            assert_eq!(selector.matches(&web), w, "{s:?} on web");
            assert_eq!(selector.matches(&db), d, "{s:?} on db");
            assert_eq!(selector.matches(&none), n, "{s:?} on no labels");
        }
    }

    #[test]
    fn parse_errors() {
        // (input, part of the message)
        let cases = [
            (",", "expected a label key"),
            ("a=b,", "expected a label key"),
            ("a=b,,c=d", "expected a label key"),
            ("=b", "expected a label key"),
            ("!", "expected a label key"),
            ("!=b", "expected a label key"),
            ("a=b=c", "found '=', expected ',' or end of selector"),
            ("a b", "found 'b' after key 'a'"),
            ("a in", "expected '(' starting a value list"),
            ("a in x", "expected '(' starting a value list"),
            ("a in (x", "expected ',' or ')'"),
            ("a in (x y)", "expected ',' or ')'"),
            ("a in (x))", "found ')', expected ','"),
            ("a in (x),", "expected a label key"),
            ("a notin", "expected '('"),
            ("a>1", "found '>' after key 'a'"),
            ("a<1", "found '<' after key 'a'"),
            ("!a=b", "found '=', expected ',' or end of selector"),
            ("(a)", "expected a label key"),
            ("a=(b)", "found '(', expected ','"),
        ];
        for (input, want) in cases {
            let err = LabelSelector::parse(input).expect_err(input);
            let msg = err.to_string();
            assert!(
                matches!(err, SelectorError::Syntax { kind: "label", .. }),
                "{input:?}: {msg}"
            );
            assert!(msg.contains(want), "{input:?}: {msg}");
            assert!(msg.contains(&format!("{input:?}")), "{input:?}: {msg}");
        }
        let err = LabelSelector::parse("a=b, -bad=c").unwrap_err();
        assert!(
            matches!(err, SelectorError::InvalidKey { ref key, .. } if key == "-bad"),
            "{err}"
        );
        assert!(
            err.to_string().contains("invalid label key \"-bad\""),
            "{err}"
        );
        let err = LabelSelector::parse("a=b/c").unwrap_err();
        assert!(
            matches!(err, SelectorError::InvalidValue { ref key, ref value, .. } if key == "a" && value == "b/c"),
            "{err}"
        );
        let err = LabelSelector::parse("a in (ok, -no)").unwrap_err();
        assert!(
            err.to_string()
                .contains("invalid value \"-no\" for label key \"a\""),
            "{err}"
        );
        let long = format!("a={}", "x".repeat(64));
        assert!(
            LabelSelector::parse(&long)
                .unwrap_err()
                .to_string()
                .contains("no more than 63")
        );
        let err = LabelSelector::parse("a=b,x y").unwrap_err();
        assert!(
            matches!(err, SelectorError::Syntax { position: 6, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn from_parts() {
        let match_labels = labels(&[("app", "web")]);
        let exprs = vec![
            (
                "tier".to_string(),
                "In".to_string(),
                vec!["frontend".to_string(), "cache".to_string()],
            ),
            ("canary".to_string(), "DoesNotExist".to_string(), vec![]),
            (
                "zone".to_string(),
                "NotIn".to_string(),
                vec!["b".to_string()],
            ),
            ("team".to_string(), "Exists".to_string(), vec![]),
        ];
        let s = LabelSelector::from_parts(&match_labels, &exprs).unwrap();
        assert_eq!(
            s.to_string(),
            "app=web,!canary,team,tier in (cache,frontend),zone notin (b)"
        );
        assert_eq!(sel(&s.to_string()), s);
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "cache"), ("team", "x")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "cache")])));
        assert!(!s.matches(&labels(&[
            ("app", "web"),
            ("tier", "cache"),
            ("team", "x"),
            ("zone", "b")
        ])));

        let empty = LabelSelector::from_parts(&BTreeMap::new(), &[]).unwrap();
        assert!(empty.is_empty());
        assert!(empty.matches(&labels(&[("x", "y")])));

        let expr = |k: &str, op: &str, vals: &[&str]| {
            vec![(
                k.to_string(),
                op.to_string(),
                vals.iter().map(|v| v.to_string()).collect(),
            )]
        };
        let no_labels = BTreeMap::new();
        let err = LabelSelector::from_parts(&no_labels, &expr("a", "in", &["x"])).unwrap_err();
        assert_eq!(
            err,
            SelectorError::UnknownOperator {
                key: "a".into(),
                operator: "in".into()
            }
        );
        assert!(
            err.to_string()
                .contains("use one of In, NotIn, Exists or DoesNotExist"),
            "{err}"
        );
        let err = LabelSelector::from_parts(&no_labels, &expr("a", "In", &[])).unwrap_err();
        assert_eq!(
            err,
            SelectorError::MissingValues {
                key: "a".into(),
                operator: Operator::In
            }
        );
        assert!(
            err.to_string().contains("values must be non-empty"),
            "{err}"
        );
        let err = LabelSelector::from_parts(&no_labels, &expr("a", "NotIn", &[])).unwrap_err();
        assert_eq!(
            err,
            SelectorError::MissingValues {
                key: "a".into(),
                operator: Operator::NotIn
            }
        );
        let err = LabelSelector::from_parts(&no_labels, &expr("a", "Exists", &["x"])).unwrap_err();
        assert_eq!(
            err,
            SelectorError::UnexpectedValues {
                key: "a".into(),
                operator: Operator::Exists
            }
        );
        assert!(err.to_string().contains("values must be empty"), "{err}");
        let err =
            LabelSelector::from_parts(&no_labels, &expr("a", "DoesNotExist", &["x"])).unwrap_err();
        assert!(matches!(err, SelectorError::UnexpectedValues { .. }));
        let err = LabelSelector::from_parts(&no_labels, &expr("a b", "Exists", &[])).unwrap_err();
        assert!(matches!(err, SelectorError::InvalidKey { .. }));
        let err = LabelSelector::from_parts(&no_labels, &expr("a", "In", &["b c"])).unwrap_err();
        assert!(matches!(err, SelectorError::InvalidValue { .. }));
        let err = LabelSelector::from_parts(&labels(&[("a", "-x")]), &[]).unwrap_err();
        assert!(matches!(err, SelectorError::InvalidValue { .. }));
    }

    #[test]
    fn requirement_new() {
        let r = Requirement::new("a", Operator::Equals, ["x"]).unwrap();
        assert_eq!(r.to_string(), "a=x");
        assert!(Requirement::new("a", Operator::Equals, Vec::<String>::new()).is_err());
        let err = Requirement::new("a", Operator::NotEquals, ["x", "y"]).unwrap_err();
        assert_eq!(
            err,
            SelectorError::WrongValueCount {
                key: "a".into(),
                operator: Operator::NotEquals
            }
        );
        assert!(err.to_string().contains("exactly one value"), "{err}");
        let r = Requirement::new("a", Operator::In, ["y", "x"]).unwrap();
        assert_eq!(r.values().iter().collect::<Vec<_>>(), ["x", "y"]);
        let s = LabelSelector::from_requirements(vec![
            r,
            Requirement::new("0", Operator::Exists, Vec::<&str>::new()).unwrap(),
        ]);
        assert_eq!(s.to_string(), "0,a in (x,y)");
    }

    const POD_FIELDS: &[&str] = &[
        "metadata.name",
        "metadata.namespace",
        "status.phase",
        "spec.nodeName",
    ];

    fn pod_field(name: &str) -> Option<String> {
        match name {
            "metadata.name" => Some("web-0".into()),
            "metadata.namespace" => Some("default".into()),
            "status.phase" => Some("Running".into()),
            _ => None,
        }
    }

    #[test]
    fn field_selector_parse_match_display() {
        // (input, canonical, matches the pod)
        let cases = [
            ("", "", true),
            ("metadata.name=web-0", "metadata.name=web-0", true),
            ("metadata.name==web-0", "metadata.name=web-0", true),
            ("metadata.name!=web-0", "metadata.name!=web-0", false),
            ("metadata.name=web-1", "metadata.name=web-1", false),
            (
                "status.phase!=Pending,metadata.namespace=default",
                "status.phase!=Pending,metadata.namespace=default",
                true,
            ),
            (" status.phase = Running ", "status.phase=Running", true),
            ("status.phase=Running,,", "status.phase=Running", true),
            ("spec.nodeName=", "spec.nodeName=", true),
            ("spec.nodeName!=", "spec.nodeName!=", false),
            ("spec.nodeName!=node-1", "spec.nodeName!=node-1", true),
            ("metadata.name=a\\,b", "metadata.name=a\\,b", false),
            ("metadata.name=a\\=b\\\\", "metadata.name=a\\=b\\\\", false),
            ("metadata.name=!x", "metadata.name=!x", false),
        ];
        for (input, canonical, want) in cases {
            let s = FieldSelector::parse(input, POD_FIELDS)
                .unwrap_or_else(|e| panic!("{input:?} should parse: {e}"));
            assert_eq!(s.to_string(), canonical, "{input:?}");
            assert_eq!(s.matches(pod_field), want, "{input:?}");
            assert_eq!(
                FieldSelector::parse(canonical, POD_FIELDS),
                Ok(s),
                "{canonical:?}"
            );
        }
        let s =
            FieldSelector::parse("metadata.name=a\\,b\\=c\\\\,status.phase=x", POD_FIELDS).unwrap();
        assert_eq!(s.requirements().len(), 2);
        assert_eq!(s.requirements()[0].value(), "a,b=c\\");
        assert!(s.matches(|f| Some(if f == "metadata.name" { "a,b=c\\" } else { "x" }.into())));
        assert_eq!(s.requires_exact_match("metadata.name"), Some("a,b=c\\"));
        assert_eq!(s.requires_exact_match("metadata.namespace"), None);
        let neg = FieldSelector::parse("metadata.name!=a", POD_FIELDS).unwrap();
        assert_eq!(neg.requires_exact_match("metadata.name"), None);
        assert!(neg.requirements()[0].is_negated());
        assert!(FieldSelector::everything().is_empty());
    }

    #[test]
    fn field_selector_errors() {
        let err = FieldSelector::parse("metadata.name=a,spec.foo=b", POD_FIELDS).unwrap_err();
        assert_eq!(
            err.to_string(),
            "field selector \"metadata.name=a,spec.foo=b\": field \"spec.foo\" is not supported; \
             supported fields: metadata.name, metadata.namespace, status.phase, spec.nodeName"
        );
        let err = FieldSelector::parse("a=b", &[]).unwrap_err();
        assert!(
            err.to_string()
                .contains("this resource supports no field selectors"),
            "{err}"
        );
        let cases = [
            ("metadata.name", "has no operator"),
            ("metadata.name!x", "has no operator"),
            ("=x", "has no field name"),
            ("metadata.name=a=b", "unescaped '='"),
            ("metadata.name=a\\b", "invalid escape '\\b'"),
            ("metadata.name=a\\", "lone '\\'"),
        ];
        for (input, want) in cases {
            let err = FieldSelector::parse(input, POD_FIELDS).expect_err(input);
            let msg = err.to_string();
            assert!(
                matches!(err, SelectorError::Syntax { kind: "field", .. }),
                "{msg}"
            );
            assert!(msg.contains(want), "{input:?}: {msg}");
        }
        let err = FieldSelector::parse("status.phase=x,metadata.name=a=b", POD_FIELDS).unwrap_err();
        assert!(
            matches!(err, SelectorError::Syntax { position: 30, .. }),
            "{err:?}"
        );
    }
}
