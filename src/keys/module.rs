//! A loaded PKCS#11 module: the `cryptoki` context for everything, plus the module's own
//! `C_GetTokenInfo`, read and parsed here because `cryptoki`'s parser of `CK_TOKEN_INFO`
//! is stricter than real modules are.
//!
//! `cryptoki` (0.12) turns a `CK_TOKEN_INFO` into its `TokenInfo` with `TryFrom`, which
//! fails the whole call when a field it does not need to fail on is unusual: a token
//! with `CKF_CLOCK_ON_TOKEN` whose `utcTime` is not 14 ASCII digits (openCryptoki's soft
//! token puts a time of day there, `HH:MM:SS`) makes `get_token_info` return "Error
//! parsing string as integer", and no token can be found by label. Network HSM modules
//! have similar quirks (NUL instead of blank padding, non-UTF-8 manufacturer strings).
//! Token discovery needs only the label, serial, manufacturer and model, so it calls
//! the module's `C_GetTokenInfo` through its function list and reads those four fields
//! tolerantly (see [`TokenDescription::from_raw`]). The crate is not forked: the
//! function list comes from the module itself, through `cryptoki-sys`, which `cryptoki`
//! is built on.

use std::path::Path;
use std::sync::Arc;

use cryptoki::context::{Function, Pkcs11};
use cryptoki::slot::Slot;
use cryptoki_sys::{CK_FUNCTION_LIST, CK_RV, CK_SLOT_ID, CK_TOKEN_INFO};

use super::HsmError;
use super::token::{TokenInfo, initialize};

/// `C_GetTokenInfo` as the module's function list holds it.
type GetTokenInfoFn = unsafe extern "C" fn(CK_SLOT_ID, *mut CK_TOKEN_INFO) -> CK_RV;

/// A PKCS#11 module loaded from a file: `cryptoki`'s context and the module's
/// `C_GetTokenInfo`.
#[derive(Clone)]
pub struct Module {
    ctx: Pkcs11,
    raw: Arc<RawTokenInfo>,
}

impl std::fmt::Debug for Module {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Module").finish_non_exhaustive()
    }
}

/// The module's `C_GetTokenInfo` and the library handle that keeps it loaded.
struct RawTokenInfo {
    /// Holds the library loaded for as long as `get_token_info` may be called (the
    /// dynamic loader counts references; this is the same library `ctx` loaded).
    _library: cryptoki_sys::Pkcs11,
    get_token_info: GetTokenInfoFn,
}

/// What token discovery reads from `CK_TOKEN_INFO`: the four strings, tolerantly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenDescription {
    pub label: String,
    pub manufacturer: String,
    pub model: String,
    pub serial: String,
}

impl Module {
    /// Loads the module at `path`.
    pub fn load(path: &Path) -> Result<Self, HsmError> {
        let failed = |reason: String| HsmError::Module { path: path.display().to_string(), reason };
        let ctx = Pkcs11::new(path).map_err(|e| failed(e.to_string()))?;
        // SAFETY: loading a shared library runs its initializers. This is the library
        // `Pkcs11::new` loaded a moment ago from the same path, so the dynamic loader
        // returns the copy already in the process (and counts one more reference)
        // instead of running anything again.
        let library = unsafe { cryptoki_sys::Pkcs11::new(path) }.map_err(|e| failed(e.to_string()))?;
        let get_function_list = *library
            .C_GetFunctionList
            .as_ref()
            .map_err(|_| failed("the module exports no C_GetFunctionList".into()))?;
        let mut list: *mut CK_FUNCTION_LIST = std::ptr::null_mut();
        // SAFETY: `C_GetFunctionList` (PKCS#11 §5.2) writes one pointer to the module's
        // function list into the `CK_FUNCTION_LIST_PTR` it is given; `list` is a valid,
        // writable pointer variable of that type. It may be called before `C_Initialize`.
        let rv = unsafe { get_function_list(&mut list) };
        cryptoki::error::Rv::from(rv).into_result(Function::GetFunctionList)?;
        if list.is_null() {
            return Err(failed("C_GetFunctionList returned no function list".into()));
        }
        // SAFETY: `list` is non-null and points to the module's `CK_FUNCTION_LIST`,
        // which the module keeps for as long as it is loaded (`library` holds it). Every
        // version of the structure (2.x and 3.x) begins with the 2.x layout, so reading
        // `C_GetTokenInfo` from it is in bounds; the field is copied out.
        let get_token_info =
            unsafe { (*list).C_GetTokenInfo }.ok_or_else(|| failed("the module has no C_GetTokenInfo".into()))?;
        Ok(Self { ctx, raw: Arc::new(RawTokenInfo { _library: library, get_token_info }) })
    }

    /// The `cryptoki` context, for everything but reading token information.
    pub fn context(&self) -> &Pkcs11 {
        &self.ctx
    }

    /// Initializes the module (tolerating an earlier initialization) and finds the token
    /// by label or serial. Token information is read through [`Self::token_description`],
    /// which tolerates vendor quirks in `CK_TOKEN_INFO`.
    pub fn find_token(&self, label: Option<&str>, serial: Option<&str>) -> Result<TokenInfo, HsmError> {
        let ctx = self.context();
        initialize(ctx)?;
        let mut seen = Vec::new();
        for slot in ctx.get_slots_with_token()? {
            let info = self.token_description(slot)?;
            let matches = label.is_none_or(|want| want == info.label) && serial.is_none_or(|want| want == info.serial);
            if matches {
                return Ok(TokenInfo {
                    slot,
                    label: info.label,
                    serial: info.serial,
                    manufacturer: info.manufacturer,
                    model: info.model,
                    has_ecdsa_sha256: ctx
                        .get_mechanism_info(slot, cryptoki::mechanism::MechanismType::ECDSA_SHA256)
                        .is_ok(),
                });
            }
            seen.push(info.label);
        }
        Err(HsmError::TokenNotFound { wanted: label.or(serial).unwrap_or_default().to_string(), seen })
    }

    /// `C_GetTokenInfo` of `slot`, reduced to what discovery needs and parsed
    /// tolerantly. The module must be initialized.
    pub fn token_description(&self, slot: Slot) -> Result<TokenDescription, HsmError> {
        let mut info = CK_TOKEN_INFO::default();
        // SAFETY: the function pointer is the module's own `C_GetTokenInfo`, valid while
        // `_library` keeps the module loaded (it lives in the same `RawTokenInfo`), and
        // `info` is a valid, writable `CK_TOKEN_INFO` of this frame that the call fills.
        let rv = unsafe { (self.raw.get_token_info)(slot.into(), &mut info) };
        cryptoki::error::Rv::from(rv).into_result(Function::GetTokenInfo)?;
        Ok(TokenDescription::from_raw(&info))
    }
}

impl TokenDescription {
    /// The label, manufacturer, model and serial number of a `CK_TOKEN_INFO`. PKCS#11
    /// pads them with blanks; some modules pad with NULs or end them with one, and some
    /// put bytes that are not UTF-8 in them. A field ends at its first NUL, trailing
    /// and leading blanks are dropped, and bytes that are not UTF-8 become U+FFFD.
    /// Every other field (flags, counters, versions, the clock) is ignored: nothing
    /// about them can make discovery fail.
    pub fn from_raw(info: &CK_TOKEN_INFO) -> Self {
        Self {
            label: field(&info.label),
            manufacturer: field(&info.manufacturerID),
            model: field(&info.model),
            serial: field(&info.serialNumber),
        }
    }
}

fn field(raw: &[u8]) -> String {
    let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).trim_matches(' ').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn padded<const N: usize>(s: &[u8], pad: u8) -> [u8; N] {
        let mut out = [pad; N];
        out[..s.len()].copy_from_slice(s);
        out
    }

    fn info(label: &[u8], serial: &[u8], pad: u8) -> CK_TOKEN_INFO {
        CK_TOKEN_INFO {
            label: padded(label, pad),
            manufacturerID: padded(b"IBM Corp.", pad),
            model: padded(b"IBM SoftTok", pad),
            serialNumber: padded(serial, pad),
            ..Default::default()
        }
    }

    #[test]
    fn blank_padded_fields_as_pkcs11_says() {
        let d = TokenDescription::from_raw(&info(b"symbolon", b"123", b' '));
        assert_eq!(d.label, "symbolon");
        assert_eq!(d.serial, "123");
        assert_eq!(d.manufacturer, "IBM Corp.");
        assert_eq!(d.model, "IBM SoftTok");
    }

    #[test]
    fn nul_padding_and_nul_terminated_fields() {
        assert_eq!(TokenDescription::from_raw(&info(b"symbolon", b"123", 0)).label, "symbolon");
        // A NUL ends the field even when blanks or garbage follow it.
        let mut i = info(b"symbolon\0junk", b"42\0", b' ');
        i.serialNumber[5] = b'x';
        let d = TokenDescription::from_raw(&i);
        assert_eq!((d.label.as_str(), d.serial.as_str()), ("symbolon", "42"));
    }

    #[test]
    fn a_clock_that_is_not_digits_and_odd_counters_do_not_matter() {
        // openCryptoki's soft token: CKF_CLOCK_ON_TOKEN with a time of day in utcTime,
        // and CK_UNAVAILABLE_INFORMATION in counters.
        let mut i = info(b"symbolon", b"123", b' ');
        i.flags = cryptoki_sys::CKF_CLOCK_ON_TOKEN | cryptoki_sys::CKF_TOKEN_INITIALIZED;
        i.utcTime = padded(b"09:38:07", b' ');
        i.ulRwSessionCount = cryptoki_sys::CK_UNAVAILABLE_INFORMATION;
        i.ulMaxSessionCount = CK_RV::MAX - 1;
        assert_eq!(TokenDescription::from_raw(&i).label, "symbolon");
        // cryptoki's own parser refuses the same structure.
        assert!(cryptoki::slot::TokenInfo::try_from(i).is_err(), "cryptoki still rejects this clock");
    }

    #[test]
    fn bytes_that_are_not_utf8_or_all_blank() {
        let d = TokenDescription::from_raw(&info(b"hsm-\xff\xfe", b"\x80", b' '));
        assert_eq!(d.label, "hsm-\u{fffd}\u{fffd}");
        assert_eq!(d.serial, "\u{fffd}");
        let empty = TokenDescription::from_raw(&info(b"", b"", b' '));
        assert_eq!((empty.label.as_str(), empty.serial.as_str()), ("", ""));
        let full = TokenDescription::from_raw(&info(&[b'a'; 32], &[b'9'; 16], b' '));
        assert_eq!((full.label.len(), full.serial.len()), (32, 16));
    }
}
