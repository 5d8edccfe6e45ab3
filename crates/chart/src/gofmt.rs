//! Go's `fmt.Sprintf`, `Sprint` and `Sprintln` for template values, so `printf`, `print`
//! and `println` format numbers as Helm does: values from YAML files are float64
//! (`printf "%v" 1000000` is `1e+06`, `printf "%d" 80` is `%!d(float64=80)`).

use std::fmt::Write as _;

use gotmpl::Value;

use crate::funcs::go_string;

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Nil => "<nil>",
        Value::Bool(_) => "bool",
        Value::Int(_) => "int64",
        Value::Uint(_) => "uint64",
        Value::Float(_) => "float64",
        Value::String(_) => "string",
        Value::List(_) => "[]interface {}",
        Value::Map(_) => "map[string]interface {}",
        Value::Function(_) => "func",
    }
}

/// `%!verb(type=value)`, Go's report of a verb that does not fit its operand.
fn bad_verb(verb: char, v: &Value) -> String {
    match v {
        Value::Nil => format!("%!{verb}(<nil>)"),
        other => format!("%!{verb}({}={})", type_name(other), go_string(other)),
    }
}

#[derive(Default)]
struct Spec {
    minus: bool,
    plus: bool,
    space: bool,
    zero: bool,
    sharp: bool,
    width: Option<usize>,
    precision: Option<usize>,
}

fn pad(s: String, spec: &Spec, numeric: bool) -> String {
    let Some(w) = spec.width else { return s };
    let len = s.chars().count();
    if len >= w {
        return s;
    }
    let fill = w - len;
    if spec.minus {
        return format!("{s}{}", " ".repeat(fill));
    }
    if spec.zero && numeric {
        let (sign, digits) = match s.strip_prefix(['-', '+']) {
            Some(rest) => (&s[..1], rest.to_string()),
            None => ("", s.clone()),
        };
        return format!("{sign}{}{digits}", "0".repeat(fill));
    }
    format!("{}{s}", " ".repeat(fill))
}

fn signed(s: String, negative: bool, spec: &Spec) -> String {
    if negative {
        s
    } else if spec.plus {
        format!("+{s}")
    } else if spec.space {
        format!(" {s}")
    } else {
        s
    }
}

/// Go's `%e` with `prec` digits: `1.500000e+00`.
fn exp_form(f: f64, prec: usize, upper: bool) -> String {
    let s = format!("{f:.prec$e}");
    let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let sign = if exp < 0 { '-' } else { '+' };
    let out = format!("{mant}e{sign}{:02}", exp.abs());
    if upper { out.to_uppercase() } else { out }
}

/// Go's `%g` with an explicit precision (significant digits).
fn g_form(f: f64, prec: usize) -> String {
    let prec = prec.max(1);
    if f == 0.0 {
        return "0".into();
    }
    let exp = f.abs().log10().floor() as i32;
    if exp < -4 || exp >= prec as i32 {
        let s = exp_form(f, prec - 1, false);
        let (mant, e) = s.split_once('e').unwrap_or((&s, ""));
        let mant = if mant.contains('.') { mant.trim_end_matches('0').trim_end_matches('.') } else { mant };
        return format!("{mant}e{e}");
    }
    let decimals = (prec as i32 - 1 - exp).max(0) as usize;
    let s = format!("{f:.decimals$}");
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s }
}

fn format_one(verb: char, spec: &Spec, v: &Value) -> String {
    let numeric = matches!(v, Value::Int(_) | Value::Uint(_) | Value::Float(_));
    let text = match (verb, v) {
        ('v', Value::Float(f)) => signed(go_string(v), *f < 0.0, spec),
        ('v', Value::Int(i)) => signed(i.to_string(), *i < 0, spec),
        ('v', _) => go_string(v),
        ('s', Value::String(s)) => match spec.precision {
            Some(p) => s.chars().take(p).collect(),
            None => s.to_string(),
        },
        ('s', Value::List(_) | Value::Map(_)) => go_string(v),
        ('q', Value::String(s)) => crate::funcs::go_quote(s),
        ('q', Value::Int(i)) => match char::from_u32(*i as u32) {
            Some(c) => format!("'{c}'"),
            None => bad_verb(verb, v),
        },
        ('t', Value::Bool(b)) => b.to_string(),
        ('d', Value::Int(i)) => signed(i.to_string(), *i < 0, spec),
        ('d', Value::Uint(u)) => signed(u.to_string(), false, spec),
        ('x', Value::Int(i)) => format!("{}{:x}", if *i < 0 { "-" } else { "" }, i.unsigned_abs()),
        ('X', Value::Int(i)) => format!("{}{:X}", if *i < 0 { "-" } else { "" }, i.unsigned_abs()),
        ('x', Value::String(s)) => s.bytes().map(|b| format!("{b:02x}")).collect(),
        ('X', Value::String(s)) => s.bytes().map(|b| format!("{b:02X}")).collect(),
        ('o', Value::Int(i)) => format!("{}{:o}", if *i < 0 { "-" } else { "" }, i.unsigned_abs()),
        ('b', Value::Int(i)) => format!("{}{:b}", if *i < 0 { "-" } else { "" }, i.unsigned_abs()),
        ('c', Value::Int(i)) => char::from_u32(*i as u32).map_or_else(|| bad_verb(verb, v), String::from),
        ('U', Value::Int(i)) => format!("U+{:04X}", i),
        ('f' | 'F', Value::Float(f)) => signed(format!("{:.*}", spec.precision.unwrap_or(6), f), *f < 0.0, spec),
        ('e' | 'E', Value::Float(f)) => signed(exp_form(*f, spec.precision.unwrap_or(6), verb == 'E'), *f < 0.0, spec),
        ('g' | 'G', Value::Float(f)) => {
            let s = match spec.precision {
                Some(p) => g_form(*f, p),
                None => go_string(v),
            };
            signed(if verb == 'G' { s.to_uppercase() } else { s }, *f < 0.0, spec)
        }
        _ => return bad_verb(verb, v),
    };
    let _ = spec.sharp;
    pad(text, spec, numeric)
}

/// `fmt.Sprintf(format, args...)`.
pub(crate) fn sprintf(format: &str, args: &[Value]) -> String {
    let mut out = String::with_capacity(format.len() + 16);
    let chars: Vec<char> = format.chars().collect();
    let mut i = 0;
    let mut next = 0;
    while i < chars.len() {
        let c = chars[i];
        if c != '%' {
            out.push(c);
            i += 1;
            continue;
        }
        i += 1;
        let mut spec = Spec::default();
        while i < chars.len() {
            match chars[i] {
                '-' => spec.minus = true,
                '+' => spec.plus = true,
                ' ' => spec.space = true,
                '0' => spec.zero = true,
                '#' => spec.sharp = true,
                _ => break,
            }
            i += 1;
        }
        let number = |i: &mut usize, next: &mut usize| -> Option<usize> {
            if *i < chars.len() && chars[*i] == '*' {
                *i += 1;
                let v = args.get(*next).and_then(|a| if let Value::Int(n) = a { Some(*n as usize) } else { None });
                *next += 1;
                return v;
            }
            let start = *i;
            while *i < chars.len() && chars[*i].is_ascii_digit() {
                *i += 1;
            }
            (start < *i).then(|| chars[start..*i].iter().collect::<String>().parse().unwrap_or(0))
        };
        spec.width = number(&mut i, &mut next);
        if i < chars.len() && chars[i] == '.' {
            i += 1;
            spec.precision = Some(number(&mut i, &mut next).unwrap_or(0));
        }
        let Some(&verb) = chars.get(i) else {
            out.push_str("%!(NOVERB)");
            break;
        };
        i += 1;
        if verb == '%' {
            out.push('%');
            continue;
        }
        match args.get(next) {
            Some(v) => out.push_str(&format_one(verb, &spec, v)),
            None => {
                let _ = write!(out, "%!{verb}(MISSING)");
            }
        }
        next += 1;
    }
    if next < args.len() {
        out.push_str("%!(EXTRA ");
        let extra: Vec<String> = args[next..]
            .iter()
            .map(|v| match v {
                Value::Nil => "<nil>".to_string(),
                other => format!("{}={}", type_name(other), go_string(other)),
            })
            .collect();
        out.push_str(&extra.join(", "));
        out.push(')');
    }
    out
}

/// `fmt.Sprint`: a space between operands when neither is a string.
pub(crate) fn sprint(args: &[Value]) -> String {
    let mut out = String::new();
    for (i, v) in args.iter().enumerate() {
        if i > 0 && !matches!(v, Value::String(_)) && !matches!(args[i - 1], Value::String(_)) {
            out.push(' ');
        }
        out.push_str(&go_string(v));
    }
    out
}

/// `fmt.Sprintln`: spaces between all operands, a newline at the end.
pub(crate) fn sprintln(args: &[Value]) -> String {
    let mut out = args.iter().map(go_string).collect::<Vec<_>>().join(" ");
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_verbs() {
        let f = |fmt: &str, a: &[Value]| sprintf(fmt, a);
        assert_eq!(
            f("%v %s %d %g", &[Value::Float(1e6), Value::Float(1e6), Value::Float(80.0), Value::Float(1e6)]),
            "1e+06 %!s(float64=1e+06) %!d(float64=80) 1e+06"
        );
        assert_eq!(
            f("%s-%d-%v-%.2f", &[Value::String("s".into()), Value::Int(7), Value::Bool(true), Value::Float(1.5)]),
            "s-7-true-1.50"
        );
        assert_eq!(
            f(
                "%05d|%-4s|%4s|%x|%q|%%",
                &[
                    Value::Int(42),
                    Value::String("ab".into()),
                    Value::String("ab".into()),
                    Value::Int(255),
                    Value::String("a\"b".into())
                ]
            ),
            "00042|ab  |  ab|ff|\"a\\\"b\"|%"
        );
        assert_eq!(f("%d %d", &[Value::Int(1)]), "1 %!d(MISSING)");
        assert_eq!(f("%d", &[Value::Int(1), Value::String("x".into())]), "1%!(EXTRA string=x)");
        assert_eq!(f("%e %.3g", &[Value::Float(1.5), Value::Float(1234.5678)]), "1.500000e+00 1.23e+03");
        assert_eq!(sprint(&[Value::Float(1e6), Value::String(" ".into()), Value::Int(80)]), "1e+06 80");
        assert_eq!(sprint(&[Value::Int(1), Value::Int(2)]), "1 2");
    }
}
