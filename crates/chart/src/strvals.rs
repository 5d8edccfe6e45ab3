//! Helm's `--set` parser (`strvals`): `a.b=c`, `a={x,y}`, `a[0]=x`, `a\.b=c` (escaped
//! dots), `a=x\,y` (escaped commas), `a=null` (deletes), int64/bool typing (`--set`)
//! or strings only (`--set-string`).

use crate::values::Map;

pub(crate) fn parse_into(_s: &str, _into: &mut Map, _strings: bool) -> Result<(), String> {
    Err("--set is not supported yet".into())
}
