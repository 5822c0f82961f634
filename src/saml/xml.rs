//! A small deterministic XML writer: no pretty-printing, no self-closing tags,
//! attributes in the order given, text and attribute values escaped as C14N escapes
//! them, characters XML cannot carry replaced by U+FFFD.

use super::c14n::{escape_attr, escape_text};

/// Builds one XML document (or fragment) as a string.
#[derive(Debug, Default)]
pub struct XmlWriter {
    out: Vec<u8>,
    open: Vec<String>,
}

fn clean(s: &str) -> std::borrow::Cow<'_, str> {
    let ok =
        |c: char| matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..);
    if s.chars().all(ok) {
        std::borrow::Cow::Borrowed(s)
    } else {
        std::borrow::Cow::Owned(s.chars().map(|c| if ok(c) { c } else { '\u{FFFD}' }).collect())
    }
}

impl XmlWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Opens `<name a="v" ...>`.
    pub fn start(&mut self, name: &str, attrs: &[(&str, &str)]) -> &mut Self {
        self.out.push(b'<');
        self.out.extend_from_slice(name.as_bytes());
        for (k, v) in attrs {
            self.out.push(b' ');
            self.out.extend_from_slice(k.as_bytes());
            self.out.extend_from_slice(b"=\"");
            escape_attr(&clean(v), &mut self.out);
            self.out.push(b'"');
        }
        self.out.push(b'>');
        self.open.push(name.to_string());
        self
    }

    /// Closes the innermost open element.
    pub fn end(&mut self) -> &mut Self {
        if let Some(name) = self.open.pop() {
            self.out.extend_from_slice(b"</");
            self.out.extend_from_slice(name.as_bytes());
            self.out.push(b'>');
        }
        self
    }

    /// Character data.
    pub fn text(&mut self, text: &str) -> &mut Self {
        escape_text(&clean(text), &mut self.out);
        self
    }

    /// `<name attrs>text</name>`.
    pub fn leaf(&mut self, name: &str, attrs: &[(&str, &str)], text: &str) -> &mut Self {
        self.start(name, attrs).text(text).end()
    }

    /// Inserts already well-formed XML (a signed element built separately).
    pub fn raw(&mut self, xml: &str) -> &mut Self {
        self.out.extend_from_slice(xml.as_bytes());
        self
    }

    /// The text so far, leaving open elements open (a template to be completed).
    pub fn partial(self) -> String {
        String::from_utf8(self.out).unwrap_or_default()
    }

    /// Closes what is still open and returns the document.
    pub fn finish(mut self) -> String {
        while !self.open.is_empty() {
            self.end();
        }
        // Only UTF-8 went in (str pieces and ASCII escapes).
        String::from_utf8(self.out).unwrap_or_default()
    }
}

/// A parsed element: namespace-resolved names, attributes, children and text.
/// Comments and processing instructions are dropped; DTDs are refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub ns: String,
    pub local: String,
    /// (namespace uri or "", local name, value); namespace declarations excluded.
    pub attrs: Vec<(String, String, String)>,
    pub children: Vec<Element>,
    /// Concatenated character data directly inside this element.
    pub text: String,
}

impl Element {
    /// Is this `{ns}local`?
    pub fn is(&self, ns: &str, local: &str) -> bool {
        self.ns == ns && self.local == local
    }

    /// An unqualified attribute.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs.iter().find(|(ns, l, _)| ns.is_empty() && l == name).map(|(_, _, v)| v.as_str())
    }

    /// Children named `{ns}local`.
    pub fn children_named<'a>(&'a self, ns: &'a str, local: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.is(ns, local))
    }

    /// The first child named `{ns}local`.
    pub fn child(&self, ns: &str, local: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.is(ns, local))
    }

    /// Every descendant (depth first) named `{ns}local`.
    pub fn descendants<'a>(&'a self, ns: &'a str, local: &'a str, out: &mut Vec<&'a Element>) {
        for c in &self.children {
            if c.is(ns, local) {
                out.push(c);
            }
            c.descendants(ns, local, out);
        }
    }
}

/// Parses a document into its root [`Element`] (namespace-aware, strict).
pub fn parse(xml: &str) -> Result<Element, super::c14n::XmlError> {
    use super::c14n::{
        MAX_DEPTH, Scope, XmlError, attribute_value, check_chars, is_xml_space, lookup, namespace_decls, normalize_eol,
        resolve_reference, split_qname,
    };
    use quick_xml::Reader;
    use quick_xml::events::Event;

    let mut reader = Reader::from_str(xml);
    {
        let cfg = reader.config_mut();
        cfg.expand_empty_elements = true;
        cfg.check_end_names = true;
        cfg.check_comments = true;
    }
    let mut scopes: Vec<Scope> = Vec::new();
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    loop {
        let ev = reader.read_event().map_err(|e| XmlError::Malformed(e.to_string()))?;
        match ev {
            Event::Eof => break,
            Event::DocType(_) => return Err(XmlError::Doctype),
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) => {}
            Event::Start(s) => {
                if root.is_some() {
                    return Err(XmlError::Malformed("content after the document element".into()));
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(XmlError::TooDeep);
                }
                scopes.push(Scope { decls: namespace_decls(&s)? });
                let qn = s.name();
                let (prefix, local) = split_qname(qn.as_ref())?;
                let ns = lookup(&scopes, prefix).unwrap_or_default();
                if !prefix.is_empty() && ns.is_empty() {
                    return Err(XmlError::UnboundPrefix(prefix.to_string()));
                }
                let mut attrs: Vec<(String, String, String)> = Vec::new();
                for a in s.attributes() {
                    let a = a.map_err(|e| XmlError::Malformed(e.to_string()))?;
                    let key = a.key.as_ref();
                    if key == b"xmlns" || key.starts_with(b"xmlns:") {
                        continue;
                    }
                    let (p, l) = split_qname(key)?;
                    let ans = if p.is_empty() {
                        String::new()
                    } else {
                        lookup(&scopes, p)
                            .filter(|u| !u.is_empty())
                            .ok_or_else(|| XmlError::UnboundPrefix(p.to_string()))?
                    };
                    if attrs.iter().any(|(n, ll, _)| *n == ans && ll == l) {
                        return Err(XmlError::Malformed("duplicate attribute".into()));
                    }
                    attrs.push((ans, l.to_string(), attribute_value(&a.value)?));
                }
                stack.push(Element { ns, local: local.to_string(), attrs, children: Vec::new(), text: String::new() });
            }
            Event::End(_) => {
                scopes.pop();
                let el = stack.pop().ok_or_else(|| XmlError::Malformed("unbalanced end tag".into()))?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => root = Some(el),
                }
            }
            Event::Empty(_) => {
                return Err(XmlError::Malformed("unexpected empty element event".into()));
            }
            Event::Text(t) => {
                let raw =
                    std::str::from_utf8(t.as_ref()).map_err(|_| XmlError::Malformed("text is not UTF-8".into()))?;
                check_chars(raw)?;
                match stack.last_mut() {
                    Some(el) => el.text.push_str(&normalize_eol(raw)),
                    None if raw.chars().all(is_xml_space) => {}
                    None => {
                        return Err(XmlError::Malformed("text outside the document element".into()));
                    }
                }
            }
            Event::CData(c) => {
                let raw =
                    std::str::from_utf8(c.as_ref()).map_err(|_| XmlError::Malformed("CDATA is not UTF-8".into()))?;
                check_chars(raw)?;
                stack
                    .last_mut()
                    .ok_or_else(|| XmlError::Malformed("CDATA outside the document element".into()))?
                    .text
                    .push_str(&normalize_eol(raw));
            }
            Event::GeneralRef(r) => {
                let name = std::str::from_utf8(r.as_ref())
                    .map_err(|_| XmlError::Malformed("reference is not UTF-8".into()))?;
                let ch = resolve_reference(name)?;
                stack
                    .last_mut()
                    .ok_or_else(|| XmlError::Malformed("reference outside the document element".into()))?
                    .text
                    .push(ch);
            }
        }
    }
    if !stack.is_empty() {
        return Err(XmlError::Malformed("document is incomplete".into()));
    }
    root.ok_or_else(|| XmlError::Malformed("no document element".into()))
}
