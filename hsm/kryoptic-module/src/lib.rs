// The exports of the upstream `kryoptic` crate's src/lib.rs (Copyright 2023 Simo Sorce,
// Apache-2.0), without its FIPS provider entry point.

//! Kryoptic as a PKCS#11 shared object.

use kryoptic_lib::fns::general::{fn_get_function_list, fn_get_interface, fn_get_interface_list};
use kryoptic_lib::pkcs11::*;

/// `C_GetFunctionList`.
#[unsafe(no_mangle)]
pub extern "C" fn C_GetFunctionList(fnlist: CK_FUNCTION_LIST_PTR_PTR) -> CK_RV {
    fn_get_function_list(fnlist)
}

/// `C_GetInterface` (PKCS#11 3.0).
#[unsafe(no_mangle)]
pub extern "C" fn C_GetInterface(
    interface_name: CK_UTF8CHAR_PTR,
    version: CK_VERSION_PTR,
    interface: CK_INTERFACE_PTR_PTR,
    flags: CK_FLAGS,
) -> CK_RV {
    fn_get_interface(interface_name, version, interface, flags)
}

/// `C_GetInterfaceList` (PKCS#11 3.0).
#[unsafe(no_mangle)]
pub extern "C" fn C_GetInterfaceList(interfaces_list: CK_INTERFACE_PTR, count: CK_ULONG_PTR) -> CK_RV {
    fn_get_interface_list(interfaces_list, count)
}
