//! Helm's `--set` parser (`strvals`): `a.b=c`, `a={x,y}`, `a[0]=x`, `a[0].b=c`,
//! `a\.b=c` (escaped dots), `a=x\,y` (escaped commas), `a=null` (a null that deletes
//! the chart's default), and Helm's typing: `true`/`false`, `null`, int64 unless the
//! number starts with `0` (`--set`), or strings only (`--set-string`).

use std::sync::Arc;

use gotmpl::Value;

use crate::values::Map;

/// The largest list index `a[N]=x` may name (Helm's limit too).
const MAX_INDEX: usize = 65536;

pub(crate) fn parse_into(s: &str, into: &mut Map, strings: bool) -> Result<(), String> {
    let mut p = P { chars: s.chars().collect(), pos: 0, strings };
    while p.pos < p.chars.len() {
        p.key(into)?;
    }
    Ok(())
}

struct P {
    chars: Vec<char>,
    pos: usize,
    strings: bool,
}

impl P {
    fn next(&mut self) -> Option<char> {
        let c = self.chars.get(self.pos).copied();
        self.pos += 1;
        c
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn typed(&self, v: String) -> Value {
        if self.strings {
            return Value::String(v.into());
        }
        if v.eq_ignore_ascii_case("true") {
            return Value::Bool(true);
        }
        if v.eq_ignore_ascii_case("false") {
            return Value::Bool(false);
        }
        if v.eq_ignore_ascii_case("null") {
            return Value::Nil;
        }
        if v == "0" {
            return Value::Int(0);
        }
        if !v.starts_with('0')
            && let Ok(i) = v.parse::<i64>()
        {
            return Value::Int(i);
        }
        Value::String(v.into())
    }

    /// Characters up to an unescaped one of `stop` (consumed, returned), or the end.
    fn until(&mut self, stop: &[char]) -> (String, Option<char>) {
        let mut out = String::new();
        while let Some(c) = self.next() {
            if c == '\\' {
                match self.next() {
                    Some(n) => out.push(n),
                    None => out.push('\\'),
                }
                continue;
            }
            if stop.contains(&c) {
                return (out, Some(c));
            }
            out.push(c);
        }
        (out, None)
    }

    /// A value after `=`: `{a,b}` or plain up to `,`.
    fn value(&mut self) -> Result<Value, String> {
        if self.peek() == Some('{') {
            self.pos += 1;
            let mut items = Vec::new();
            loop {
                let (v, stop) = self.until(&[',', '}']);
                match stop {
                    Some(',') => items.push(self.typed(v)),
                    Some('}') => {
                        if !(v.is_empty() && items.is_empty()) {
                            items.push(self.typed(v));
                        }
                        break;
                    }
                    _ => return Err("list must terminate with '}'".into()),
                }
            }
            match self.next() {
                None | Some(',') => {}
                Some(c) => return Err(format!("unexpected character {c:?} after a list value")),
            }
            return Ok(Value::List(items.into()));
        }
        let (v, _) = self.until(&[',']);
        Ok(self.typed(v))
    }

    fn key(&mut self, data: &mut Map) -> Result<(), String> {
        let mut k = String::new();
        loop {
            match self.next() {
                None => {
                    if k.is_empty() {
                        return Ok(());
                    }
                    return Err(format!("key {k:?} has no value"));
                }
                Some('\\') => match self.next() {
                    Some(c) => k.push(c),
                    None => return Err(format!("key {k:?} has no value")),
                },
                Some('=') => {
                    let v = self.value()?;
                    data.insert(Arc::from(k.as_str()), v);
                    return Ok(());
                }
                Some('.') => {
                    let mut child = match data.get(k.as_str()) {
                        Some(Value::Map(m)) => (**m).clone(),
                        _ => Map::new(),
                    };
                    self.key(&mut child)?;
                    data.insert(Arc::from(k.as_str()), Value::Map(Arc::new(child)));
                    return Ok(());
                }
                Some('[') => {
                    let idx = self.index()?;
                    let mut list: Vec<Value> = match data.get(k.as_str()) {
                        Some(Value::List(l)) => l.to_vec(),
                        _ => Vec::new(),
                    };
                    self.list_item(&mut list, idx)?;
                    data.insert(Arc::from(k.as_str()), Value::List(list.into()));
                    return Ok(());
                }
                Some(',') => return Err(format!("key {k:?} has no value (cannot end with ,)")),
                Some(c) => k.push(c),
            }
        }
    }

    fn index(&mut self) -> Result<usize, String> {
        let (digits, stop) = self.until(&[']']);
        if stop != Some(']') {
            return Err("error parsing index: missing ']'".into());
        }
        let i: usize = digits.trim().parse().map_err(|_| format!("error parsing index: {digits:?} is not a number"))?;
        if i > MAX_INDEX {
            return Err(format!("index of {i} is greater than maximum supported index of {MAX_INDEX}"));
        }
        Ok(i)
    }

    fn list_item(&mut self, list: &mut Vec<Value>, idx: usize) -> Result<(), String> {
        if list.len() <= idx {
            list.resize(idx + 1, Value::Nil);
        }
        match self.next() {
            Some('=') => {
                list[idx] = self.value()?;
                Ok(())
            }
            Some('.') => {
                let mut child = match &list[idx] {
                    Value::Map(m) => (**m).clone(),
                    _ => Map::new(),
                };
                self.key(&mut child)?;
                list[idx] = Value::Map(Arc::new(child));
                Ok(())
            }
            Some('[') => {
                let inner_idx = self.index()?;
                let mut inner: Vec<Value> = match &list[idx] {
                    Value::List(l) => l.to_vec(),
                    _ => Vec::new(),
                };
                self.list_item(&mut inner, inner_idx)?;
                list[idx] = Value::List(inner.into());
                Ok(())
            }
            _ => Err("parse error: expected '=', '.' or '[' after a list index".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> String {
        let mut m = Map::new();
        parse_into(s, &mut m, false).unwrap();
        crate::funcs::go_string(&Value::Map(Arc::new(m)))
    }

    #[test]
    fn helm_set_forms() {
        assert_eq!(parse("a.b=c,d=1,e=true,f=0123,g=null"), "map[a:map[b:c] d:1 e:true f:0123 g:<nil>]");
        assert_eq!(parse("l={x,1,false}"), "map[l:[x 1 false]]");
        assert_eq!(parse("l[1]=x,m[0].n=y"), "map[l:[<nil> x] m:[map[n:y]]]");
        assert_eq!(parse(r"a\.b=x\,y"), "map[a.b:x,y]");
        let mut m = Map::new();
        assert_eq!(parse_into("a", &mut m, false).unwrap_err(), "key \"a\" has no value");
        assert_eq!(parse_into("a,b=c", &mut m, false).unwrap_err(), "key \"a\" has no value (cannot end with ,)");
    }
}
