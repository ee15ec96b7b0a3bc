//! The PunchOut cart as it comes back from the buyer's browser: an HTML form POST
//! (`application/x-www-form-urlencoded`) whose field `cxml-urlencoded` or `cxml-base64` holds
//! the PunchOutOrderMessage (the names in any case: Ariba writes `cXML-urlencoded`).
//!
//! The form is decoded by a real form decoder (`form_urlencoded`): `+` is a space and `%2B` a
//! plus. Decoding the percent escapes first and the pluses after, as hand-written handlers
//! often do, turns an encoded `+` into a space (RECIPES.md §4, reproduced there).

use base64::Engine as _;

/// The form fields that may carry the cart.
const URLENCODED: &str = "cxml-urlencoded";
const BASE64: &str = "cxml-base64";

/// The cart document's bytes from a form body, or why there is none.
pub fn cart(form: &[u8]) -> Result<Vec<u8>, String> {
    for (name, value) in form_urlencoded::parse(form) {
        if name.eq_ignore_ascii_case(URLENCODED) {
            return Ok(value.into_owned().into_bytes());
        }
        if name.eq_ignore_ascii_case(BASE64) {
            // Line breaks are common in base64 written by other tools (MIME's 76 columns).
            let compact: Vec<u8> = value.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
            return base64::engine::general_purpose::STANDARD
                .decode(&compact)
                .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(&compact))
                .map_err(|e| format!("the field {name} is not base64: {e}"));
        }
    }
    Err(format!(
        "the form has neither a {URLENCODED} nor a {BASE64} field"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CART: &str = "<cXML><Message><PunchOutOrderMessage><ItemIn><ItemDetail><Description>Schraube M8+Mutter &amp; Scheibe 100% Größe</Description></ItemDetail></ItemIn></PunchOutOrderMessage></Message></cXML>";

    #[test]
    fn an_encoded_plus_stays_a_plus_and_a_plain_plus_is_a_space() {
        let form: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("cXML-urlencoded", CART)
            .finish();
        assert!(form.contains("%2B") && form.contains('+'), "{form}");
        assert_eq!(cart(form.as_bytes()).unwrap(), CART.as_bytes());
        assert_eq!(cart(b"CXML-URLENCODED=a+b%2Bc").unwrap(), b"a b+c".to_vec());
    }

    #[test]
    fn base64_in_any_case_with_line_breaks() {
        let encoded = base64::engine::general_purpose::STANDARD.encode(CART);
        let wrapped = format!("{}\r\n{}", &encoded[..40], &encoded[40..]);
        let form: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("other", "x")
            .append_pair("cXML-Base64", &wrapped)
            .finish();
        assert_eq!(cart(form.as_bytes()).unwrap(), CART.as_bytes());
        assert!(cart(b"cxml-base64=%%%").unwrap_err().contains("not base64"));
        assert!(cart(b"cart=1").unwrap_err().contains("neither"));
    }
}
