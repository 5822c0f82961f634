//! Exclusive XML Canonicalization 1.0 without comments
//! (<http://www.w3.org/2001/10/xml-exc-c14n#>), of a whole document or of the subtree
//! of one element (a document subset as XML-DSig's same-document `URI="#id"`
//! references select it), with the enveloped-signature transform and an optional
//! `InclusiveNamespaces` `PrefixList`.
//!
//! The parser is quick-xml; everything that makes the output canonical is here:
//! line-end and attribute-value normalization, reference resolution, namespace
//! rendering by the "visibly utilized" rule, attribute ordering and escaping.
//! Document type declarations are refused (no entity expansion, no DTD defaults),
//! which XML-DSig over SAML never needs.

use std::collections::BTreeMap;

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

/// The XML namespace, bound to `xml` without declaration.
pub const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";
/// XML-DSig namespace.
pub const DSIG_NS: &str = "http://www.w3.org/2000/09/xmldsig#";

/// Why a document could not be canonicalized (or parsed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    #[error("malformed XML: {0}")]
    Malformed(String),
    #[error("document type declarations are not accepted")]
    Doctype,
    #[error("prefix {0:?} is not bound to a namespace")]
    UnboundPrefix(String),
    #[error("unknown entity reference &{0};")]
    UnknownEntity(String),
    #[error("the selected element was not found")]
    NotFound,
    #[error("more than one element matches the selection")]
    Ambiguous,
    #[error("the document nests elements too deeply")]
    TooDeep,
}

/// Deepest element nesting accepted (defends the recursion-free parser's stacks too).
pub const MAX_DEPTH: usize = 64;

/// One element on the path from the root to the current element.
#[derive(Debug, Clone)]
pub struct ElementRef {
    /// Namespace URI ("" when none).
    pub ns: String,
    pub local: String,
    /// Value of an unqualified `ID` attribute, if any.
    pub id: Option<String>,
}

/// Which subtree to canonicalize.
pub enum Selection<'a> {
    /// The whole document (document element, and processing instructions around it).
    Document,
    /// The element whose path (ancestors then itself) satisfies the predicate. Exactly
    /// one element must match.
    Element(&'a dyn Fn(&[ElementRef]) -> bool),
}

/// Selects the element whose unqualified `ID` attribute is `id`.
pub fn by_id(id: &str) -> impl Fn(&[ElementRef]) -> bool + '_ {
    move |path: &[ElementRef]| path.last().and_then(|e| e.id.as_deref()) == Some(id)
}

/// Selects `ds:SignedInfo` of the `ds:Signature` that is a child of the element `id`.
pub fn signed_info_of(id: &str) -> impl Fn(&[ElementRef]) -> bool + '_ {
    move |path: &[ElementRef]| {
        let n = path.len();
        n >= 3
            && is(&path[n - 1], DSIG_NS, "SignedInfo")
            && is(&path[n - 2], DSIG_NS, "Signature")
            && path[n - 3].id.as_deref() == Some(id)
    }
}

fn is(e: &ElementRef, ns: &str, local: &str) -> bool {
    e.ns == ns && e.local == local
}

/// Options of one canonicalization.
pub struct Options<'a> {
    pub selection: Selection<'a>,
    /// Enveloped-signature transform: leave out `ds:Signature` children of the apex.
    pub enveloped: bool,
    /// `InclusiveNamespaces` `PrefixList` (`#default` for the default namespace).
    pub inclusive_prefixes: &'a [&'a str],
}

/// Canonical form of the whole document.
pub fn canonicalize_document(xml: &str) -> Result<Vec<u8>, XmlError> {
    canonicalize(xml, &Options { selection: Selection::Document, enveloped: false, inclusive_prefixes: &[] })
}

/// Canonical form of the element with `ID="id"` after the enveloped-signature transform.
pub fn canonicalize_enveloped(xml: &str, id: &str) -> Result<Vec<u8>, XmlError> {
    let select = by_id(id);
    canonicalize(xml, &Options { selection: Selection::Element(&select), enveloped: true, inclusive_prefixes: &[] })
}

pub(crate) struct Scope {
    /// Namespace declarations of this element (prefix "" = default; uri "" = undeclared).
    pub(crate) decls: Vec<(String, String)>,
}

/// The canonicalizer.
pub fn canonicalize(xml: &str, opts: &Options<'_>) -> Result<Vec<u8>, XmlError> {
    let mut reader = Reader::from_str(xml);
    {
        let cfg = reader.config_mut();
        cfg.expand_empty_elements = true;
        cfg.check_end_names = true;
        cfg.check_comments = true;
        cfg.trim_text_start = false;
        cfg.trim_text_end = false;
    }
    let mut out: Vec<u8> = Vec::with_capacity(xml.len());
    let mut scopes: Vec<Scope> = Vec::new();
    let mut path: Vec<ElementRef> = Vec::new();
    let mut qnames: Vec<String> = Vec::new();
    // Output state: depth (in `path` terms) of the apex while inside it.
    let mut apex_depth: Option<usize> = None;
    let mut apex_done = false;
    // Skipping an excluded subtree: depth at which it started.
    let mut skip_depth: Option<usize> = None;
    // Rendered namespaces along output ancestors: one map per output element.
    let mut rendered: Vec<BTreeMap<String, String>> = Vec::new();
    let whole = matches!(opts.selection, Selection::Document);
    let mut seen_root = false;
    let mut root_closed = false;

    loop {
        let event = reader.read_event().map_err(|e| XmlError::Malformed(e.to_string()))?;
        match event {
            Event::Eof => break,
            Event::DocType(_) => return Err(XmlError::Doctype),
            Event::Decl(_) => {}
            Event::Comment(_) => {}
            Event::Start(start) => {
                if root_closed {
                    return Err(XmlError::Malformed("content after the document element".into()));
                }
                seen_root = true;
                if path.len() >= MAX_DEPTH {
                    return Err(XmlError::TooDeep);
                }
                let decls = namespace_decls(&start)?;
                scopes.push(Scope { decls });
                let qn = start.name();
                let (prefix, local) = split_qname(qn.as_ref())?;
                let ns = lookup(&scopes, prefix).unwrap_or_default();
                if !prefix.is_empty() && ns.is_empty() {
                    return Err(XmlError::UnboundPrefix(prefix.to_string()));
                }
                let id = unqualified_attr(&start, "ID")?;
                qnames.push(format!("{}{}{local}", prefix, if prefix.is_empty() { "" } else { ":" }));
                path.push(ElementRef { ns, local: local.to_string(), id });
                let depth = path.len();
                let selected = match &opts.selection {
                    Selection::Document => depth == 1,
                    Selection::Element(pred) => pred(&path),
                };
                if selected && (apex_done || apex_depth.is_some()) {
                    return Err(XmlError::Ambiguous);
                }
                if skip_depth.is_some() {
                    continue;
                }
                match apex_depth {
                    Some(a) => {
                        if opts.enveloped && depth == a + 1 && path.last().is_some_and(|e| is(e, DSIG_NS, "Signature"))
                        {
                            skip_depth = Some(depth);
                            continue;
                        }
                        write_start(&start, &scopes, &mut rendered, opts, &mut out)?;
                    }
                    None => {
                        if selected {
                            apex_depth = Some(depth);
                            write_start(&start, &scopes, &mut rendered, opts, &mut out)?;
                        }
                    }
                }
            }
            Event::End(_) => {
                let depth = path.len();
                if depth == 0 {
                    return Err(XmlError::Malformed("unbalanced end tag".into()));
                }
                path.pop();
                scopes.pop();
                let qname = qnames.pop().unwrap_or_default();
                if let Some(s) = skip_depth {
                    if s == depth {
                        skip_depth = None;
                    }
                    continue;
                }
                if let Some(a) = apex_depth {
                    // quick-xml checked that the end tag names the start tag.
                    out.extend_from_slice(b"</");
                    out.extend_from_slice(qname.as_bytes());
                    out.push(b'>');
                    rendered.pop();
                    if a == depth {
                        apex_depth = None;
                        apex_done = true;
                    }
                }
                if depth == 1 {
                    root_closed = true;
                }
            }
            Event::Empty(_) => {
                return Err(XmlError::Malformed("unexpected empty element event".into()));
            }
            Event::Text(t) => {
                let raw =
                    std::str::from_utf8(t.as_ref()).map_err(|_| XmlError::Malformed("text is not UTF-8".into()))?;
                if path.is_empty() {
                    if !raw.chars().all(is_xml_space) {
                        return Err(XmlError::Malformed("text outside the document element".into()));
                    }
                    continue;
                }
                if raw.contains("]]>") {
                    return Err(XmlError::Malformed("']]>' in text".into()));
                }
                check_chars(raw)?;
                if apex_depth.is_some() && skip_depth.is_none() {
                    escape_text(&normalize_eol(raw), &mut out);
                }
            }
            Event::GeneralRef(r) => {
                if path.is_empty() {
                    return Err(XmlError::Malformed("reference outside the document element".into()));
                }
                let name = std::str::from_utf8(r.as_ref())
                    .map_err(|_| XmlError::Malformed("reference is not UTF-8".into()))?;
                let ch = resolve_reference(name)?;
                if apex_depth.is_some() && skip_depth.is_none() {
                    let mut buf = [0u8; 4];
                    escape_text(ch.encode_utf8(&mut buf), &mut out);
                }
            }
            Event::CData(c) => {
                let raw =
                    std::str::from_utf8(c.as_ref()).map_err(|_| XmlError::Malformed("CDATA is not UTF-8".into()))?;
                check_chars(raw)?;
                if apex_depth.is_some() && skip_depth.is_none() {
                    escape_text(&normalize_eol(raw), &mut out);
                }
            }
            Event::PI(pi) => {
                let target =
                    std::str::from_utf8(pi.target()).map_err(|_| XmlError::Malformed("PI is not UTF-8".into()))?;
                if target.eq_ignore_ascii_case("xml") {
                    return Err(XmlError::Malformed("misplaced XML declaration".into()));
                }
                let content =
                    std::str::from_utf8(pi.content()).map_err(|_| XmlError::Malformed("PI is not UTF-8".into()))?;
                let data = normalize_eol(content.trim_start_matches(is_xml_space));
                let inside = apex_depth.is_some() && skip_depth.is_none();
                let around_root = whole && path.is_empty();
                if inside || around_root {
                    if around_root && root_closed {
                        out.push(b'\n');
                    }
                    out.extend_from_slice(b"<?");
                    out.extend_from_slice(target.as_bytes());
                    if !data.is_empty() {
                        out.push(b' ');
                        out.extend_from_slice(data.as_bytes());
                    }
                    out.extend_from_slice(b"?>");
                    if around_root && !seen_root {
                        out.push(b'\n');
                    }
                }
            }
        }
    }
    if !path.is_empty() || !seen_root {
        return Err(XmlError::Malformed("document is incomplete".into()));
    }
    if !apex_done {
        return Err(XmlError::NotFound);
    }
    Ok(out)
}

pub(crate) fn is_xml_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

pub(crate) fn check_chars(s: &str) -> Result<(), XmlError> {
    if s.chars().any(|c| !is_xml_char(c)) {
        return Err(XmlError::Malformed("character not allowed in XML".into()));
    }
    Ok(())
}

fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// XML 1.0 §2.11: `\r\n` and lone `\r` become `\n`.
pub(crate) fn normalize_eol(s: &str) -> String {
    if !s.contains('\r') {
        return s.to_string();
    }
    s.replace("\r\n", "\n").replace('\r', "\n")
}

pub(crate) fn resolve_reference(name: &str) -> Result<char, XmlError> {
    let ch = match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        _ => {
            let num = name.strip_prefix('#').ok_or_else(|| XmlError::UnknownEntity(name.to_string()))?;
            let code = if let Some(hex) = num.strip_prefix('x') {
                if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(XmlError::UnknownEntity(name.to_string()));
                }
                u32::from_str_radix(hex, 16)
            } else {
                if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(XmlError::UnknownEntity(name.to_string()));
                }
                num.parse::<u32>()
            }
            .map_err(|_| XmlError::UnknownEntity(name.to_string()))?;
            let c = char::from_u32(code).ok_or_else(|| XmlError::UnknownEntity(name.to_string()))?;
            if !is_xml_char(c) {
                return Err(XmlError::UnknownEntity(name.to_string()));
            }
            c
        }
    };
    Ok(ch)
}

/// The value of an attribute as an XML processor reports it (no DTD: every attribute
/// is CDATA): line ends normalized, literal whitespace to spaces, references resolved.
pub fn attribute_value(raw: &[u8]) -> Result<String, XmlError> {
    let raw = std::str::from_utf8(raw).map_err(|_| XmlError::Malformed("attribute value is not UTF-8".into()))?;
    if raw.contains('<') {
        return Err(XmlError::Malformed("'<' in attribute value".into()));
    }
    check_chars(raw)?;
    let raw = normalize_eol(raw);
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw.as_str();
    while let Some(i) = rest.find(['&', '\t', '\n']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if tail.starts_with('&') {
            let end = tail.find(';').ok_or_else(|| XmlError::Malformed("unterminated reference".into()))?;
            out.push(resolve_reference(&tail[1..end])?);
            rest = &tail[end + 1..];
        } else {
            out.push(' ');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

pub(crate) fn split_qname(name: &[u8]) -> Result<(&str, &str), XmlError> {
    let name = std::str::from_utf8(name).map_err(|_| XmlError::Malformed("name is not UTF-8".into()))?;
    let (prefix, local) = match name.split_once(':') {
        Some((p, l)) => (p, l),
        None => ("", name),
    };
    if local.is_empty() || local.contains(':') || (name.contains(':') && prefix.is_empty()) {
        return Err(XmlError::Malformed(format!("bad name {name:?}")));
    }
    Ok((prefix, local))
}

pub(crate) fn namespace_decls(start: &BytesStart<'_>) -> Result<Vec<(String, String)>, XmlError> {
    let mut decls = Vec::new();
    for attr in start.attributes() {
        let attr = attr.map_err(|e| XmlError::Malformed(e.to_string()))?;
        let key = std::str::from_utf8(attr.key.as_ref())
            .map_err(|_| XmlError::Malformed("attribute name is not UTF-8".into()))?;
        let prefix = if key == "xmlns" {
            ""
        } else if let Some(p) = key.strip_prefix("xmlns:") {
            p
        } else {
            continue;
        };
        let uri = attribute_value(&attr.value)?;
        if !prefix.is_empty() && uri.is_empty() {
            return Err(XmlError::Malformed(format!("prefix {prefix:?} undeclared (XML Namespaces 1.1 only)")));
        }
        if prefix == "xml" && uri != XML_NS || prefix == "xmlns" || uri == XML_NS && prefix != "xml" {
            return Err(XmlError::Malformed("reserved namespace misused".into()));
        }
        if prefix == "xml" {
            continue;
        }
        decls.push((prefix.to_string(), uri));
    }
    Ok(decls)
}

pub(crate) fn lookup(scopes: &[Scope], prefix: &str) -> Option<String> {
    if prefix == "xml" {
        return Some(XML_NS.to_string());
    }
    scopes.iter().rev().find_map(|s| s.decls.iter().find(|(p, _)| p == prefix).map(|(_, u)| u.clone()))
}

fn unqualified_attr(start: &BytesStart<'_>, name: &str) -> Result<Option<String>, XmlError> {
    for attr in start.attributes() {
        let attr = attr.map_err(|e| XmlError::Malformed(e.to_string()))?;
        if attr.key.as_ref() == name.as_bytes() {
            return Ok(Some(attribute_value(&attr.value)?));
        }
    }
    Ok(None)
}

fn write_start(
    start: &BytesStart<'_>,
    scopes: &[Scope],
    rendered: &mut Vec<BTreeMap<String, String>>,
    opts: &Options<'_>,
    out: &mut Vec<u8>,
) -> Result<(), XmlError> {
    let qname = std::str::from_utf8(start.name().as_ref())
        .map_err(|_| XmlError::Malformed("name is not UTF-8".into()))?
        .to_string();
    let (el_prefix, _) = split_qname(qname.as_bytes())?;
    // Regular attributes: (namespace uri, local name, qualified name, value).
    let mut attrs: Vec<(String, String, String, String)> = Vec::new();
    let mut utilized: Vec<String> = vec![el_prefix.to_string()];
    for attr in start.attributes() {
        let attr = attr.map_err(|e| XmlError::Malformed(e.to_string()))?;
        let key = std::str::from_utf8(attr.key.as_ref())
            .map_err(|_| XmlError::Malformed("attribute name is not UTF-8".into()))?;
        if key == "xmlns" || key.starts_with("xmlns:") {
            continue;
        }
        let (prefix, local) = split_qname(key.as_bytes())?;
        let uri = if prefix.is_empty() {
            String::new()
        } else {
            let u = lookup(scopes, prefix).unwrap_or_default();
            if u.is_empty() {
                return Err(XmlError::UnboundPrefix(prefix.to_string()));
            }
            if prefix != "xml" {
                utilized.push(prefix.to_string());
            }
            u
        };
        if attrs.iter().any(|(u, l, _, _)| *u == uri && l == local) {
            return Err(XmlError::Malformed(format!("duplicate attribute {key:?}")));
        }
        attrs.push((uri, local.to_string(), key.to_string(), attribute_value(&attr.value)?));
    }
    for p in opts.inclusive_prefixes {
        let p = if *p == "#default" { "" } else { p };
        // Inclusive prefixes are rendered when in scope (inclusive c14n rule).
        if p.is_empty() || lookup(scopes, p).is_some_and(|u| !u.is_empty()) {
            utilized.push(p.to_string());
        }
    }
    utilized.sort();
    utilized.dedup();
    let parent = rendered.last().cloned().unwrap_or_default();
    let mut mine = parent.clone();
    let mut ns_out: Vec<(String, String)> = Vec::new();
    for p in utilized {
        if p == "xml" {
            continue;
        }
        let uri = lookup(scopes, &p).unwrap_or_default();
        if !p.is_empty() && uri.is_empty() {
            return Err(XmlError::UnboundPrefix(p));
        }
        let before = parent.get(&p).map(String::as_str);
        let render = if p.is_empty() && uri.is_empty() {
            // xmlns="" only to undo a default rendered on an output ancestor.
            before.is_some_and(|b| !b.is_empty())
        } else {
            before != Some(uri.as_str())
        };
        if render {
            mine.insert(p.clone(), uri.clone());
            ns_out.push((p, uri));
        }
    }
    rendered.push(mine);
    // Namespace nodes sorted by prefix (default first), then attributes by (uri, local).
    ns_out.sort();
    attrs.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    out.push(b'<');
    out.extend_from_slice(qname.as_bytes());
    for (p, uri) in ns_out {
        if p.is_empty() {
            out.extend_from_slice(b" xmlns=\"");
        } else {
            out.extend_from_slice(b" xmlns:");
            out.extend_from_slice(p.as_bytes());
            out.extend_from_slice(b"=\"");
        }
        escape_attr(&uri, out);
        out.push(b'"');
    }
    for (_, _, qn, value) in attrs {
        out.push(b' ');
        out.extend_from_slice(qn.as_bytes());
        out.extend_from_slice(b"=\"");
        escape_attr(&value, out);
        out.push(b'"');
    }
    out.push(b'>');
    Ok(())
}

/// Text node escaping of C14N 1.0 §2.3.
pub fn escape_text(s: &str, out: &mut Vec<u8>) {
    for c in s.chars() {
        match c {
            '&' => out.extend_from_slice(b"&amp;"),
            '<' => out.extend_from_slice(b"&lt;"),
            '>' => out.extend_from_slice(b"&gt;"),
            '\r' => out.extend_from_slice(b"&#xD;"),
            _ => {
                let mut b = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            }
        }
    }
}

/// Attribute value escaping of C14N 1.0 §2.3.
pub fn escape_attr(s: &str, out: &mut Vec<u8>) {
    for c in s.chars() {
        match c {
            '&' => out.extend_from_slice(b"&amp;"),
            '<' => out.extend_from_slice(b"&lt;"),
            '"' => out.extend_from_slice(b"&quot;"),
            '\t' => out.extend_from_slice(b"&#x9;"),
            '\n' => out.extend_from_slice(b"&#xA;"),
            '\r' => out.extend_from_slice(b"&#xD;"),
            _ => {
                let mut b = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            }
        }
    }
}
