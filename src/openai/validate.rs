//! Validation helpers for hand-parsed request bodies.
//!
//! OpenAI answers a bad field with a 400 whose `param` names the exact place
//! (`messages[2].content[0].image_url.url`). Deserializing with serde would lose that path, so
//! requests are read from a [`serde_json::Value`] through [`Fields`], which knows where in the
//! request the object sits and turns every "wrong type" into such a 400. (`serde_path_to_error`
//! gives a path, but not OpenAI's wording or its "absent and `null` are the same" rule.)

use serde_json::{Map, Value};

use crate::error::ApiError;

/// A 400 naming `param`.
pub fn bad(message: impl Into<String>, param: impl Into<String>) -> ApiError {
    ApiError::invalid(message, Some(param.into()))
}

/// The JSON type of a value, as error messages name it.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Parses a request body into a JSON object (400 for invalid JSON or a non-object).
pub fn parse_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::invalid(
            format!("We could not parse the JSON body of your request: {e}"),
            None,
        )
    })?;
    match value {
        Value::Object(obj) => Ok(obj),
        other => Err(ApiError::invalid(
            format!(
                "The request body must be a JSON object, not {}.",
                type_name(&other)
            ),
            None,
        )),
    }
}

/// A JSON object of the request and where it sits (`""` for the body itself, `messages[2]`…).
/// An absent field and a `null` one are the same: not given.
#[derive(Debug, Clone, Copy)]
pub struct Fields<'a> {
    obj: &'a Map<String, Value>,
    at: &'a str,
}

impl<'a> Fields<'a> {
    /// The fields of `obj`, found at `at` in the request (`""` for the top level).
    pub fn new(obj: &'a Map<String, Value>, at: &'a str) -> Fields<'a> {
        Fields { obj, at }
    }

    /// The full `param` name of `key`.
    pub fn param(&self, key: &str) -> String {
        if self.at.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.at)
        }
    }

    /// The value of `key`, `None` when absent or `null`.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    /// A 400 for `key` having the wrong type.
    pub fn wrong_type(&self, key: &str, expected: &str, got: &Value) -> ApiError {
        let param = self.param(key);
        bad(
            format!("`{param}` must be {expected}, not {}.", type_name(got)),
            param,
        )
    }

    /// A 400 for a missing required `key`.
    pub fn missing(&self, key: &str) -> ApiError {
        let param = self.param(key);
        bad(format!("Missing required parameter: '{param}'."), param)
    }

    /// An optional string.
    pub fn string(&self, key: &str) -> Result<Option<&'a str>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.wrong_type(key, "a string", v)),
        }
    }

    /// A required, non-blank string.
    pub fn required_string(&self, key: &str) -> Result<&'a str, ApiError> {
        match self.string(key)? {
            None => Err(self.missing(key)),
            Some(s) if s.trim().is_empty() => {
                let param = self.param(key);
                Err(bad(format!("`{param}` must not be empty."), param))
            }
            Some(s) => Ok(s),
        }
    }

    /// An optional boolean.
    pub fn bool(&self, key: &str) -> Result<Option<bool>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.wrong_type(key, "a boolean", v)),
        }
    }

    /// An optional number (accepted and checked, even where the gateway ignores it).
    pub fn number(&self, key: &str) -> Result<Option<f64>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(v) => Err(self.wrong_type(key, "a number", v)),
        }
    }

    /// An optional integer greater than zero.
    pub fn positive_int(&self, key: &str) -> Result<Option<u64>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n > 0) => Ok(n.as_u64()),
            Some(_) => {
                let param = self.param(key);
                Err(bad(format!("`{param}` must be a positive integer."), param))
            }
        }
    }

    /// An optional nested object.
    pub fn object(&self, key: &str) -> Result<Option<&'a Map<String, Value>>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(o)) => Ok(Some(o)),
            Some(v) => Err(self.wrong_type(key, "an object", v)),
        }
    }

    /// An optional array.
    pub fn array(&self, key: &str) -> Result<Option<&'a [Value]>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(v) => Err(self.wrong_type(key, "an array", v)),
        }
    }
}

/// The MIME type of a well-formed image `data:` URL (`data:image/<type>;base64,<data>`), or
/// why it is not one. Strict: the base64 must decode as it stands (no spaces, no line breaks)
/// to a non-empty image, so that nothing OpenCode or the provider would refuse after a long
/// wait gets through.
pub fn image_data_url_mime(url: &str) -> Result<String, &'static str> {
    use base64::Engine;
    let rest = url
        .strip_prefix("data:")
        .ok_or("only base64 `data:image/...;base64,` URLs are supported for images")?;
    let (meta, data) = rest
        .split_once(',')
        .ok_or("a data URL needs a comma before its data")?;
    let mime = meta
        .strip_suffix(";base64")
        .ok_or("the data must be base64 (`;base64,`)")?;
    let subtype = mime
        .strip_prefix("image/")
        .ok_or("the media type must be an image type (`image/...`)")?;
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$&-^_.+".contains(c);
    if subtype.is_empty() || !subtype.chars().all(token) {
        return Err("the media type must be a valid `image/<subtype>`");
    }
    if data.is_empty() {
        return Err("the image data is empty");
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|_| "the image data is not valid base64")?;
    if decoded.is_empty() {
        return Err("the image data is empty");
    }
    Ok(mime.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn param_of(e: ApiError) -> String {
        match e {
            ApiError::InvalidRequest { param, .. } => param.unwrap_or_default(),
            e => panic!("unexpected {e:?}"),
        }
    }

    #[test]
    fn fields_name_the_full_path_and_treat_null_as_absent() {
        let v = json!({"a": null, "b": 5, "c": "x", "d": {"e": true}});
        let obj = v.as_object().unwrap();
        let f = Fields::new(obj, "messages[2]");
        assert_eq!(f.string("a").unwrap(), None);
        assert_eq!(param_of(f.string("b").unwrap_err()), "messages[2].b");
        assert_eq!(
            param_of(f.required_string("a").unwrap_err()),
            "messages[2].a"
        );
        assert_eq!(f.required_string("c").unwrap(), "x");
        assert_eq!(param_of(f.bool("c").unwrap_err()), "messages[2].c");
        assert_eq!(param_of(f.positive_int("c").unwrap_err()), "messages[2].c");
        assert_eq!(f.positive_int("b").unwrap(), Some(5));
        assert!(f.object("d").unwrap().is_some());
        assert_eq!(param_of(f.array("d").unwrap_err()), "messages[2].d");
        assert_eq!(Fields::new(obj, "").param("b"), "b");
    }

    #[test]
    fn data_urls_are_checked_strictly() {
        assert_eq!(
            image_data_url_mime("data:image/png;base64,aGVsbG8=").as_deref(),
            Ok("image/png")
        );
        for bad in [
            "https://example.com/x.png",
            "data:text/plain;base64,aGVsbG8=",
            "data:image/png;base64,",
            "data:image/;base64,aGVsbG8=",
            "data:image/png,aGVsbG8=",
            "data:image/png;base64, aGVsbG8=",
            "data:image/png;base64,aGVs\nbG8=",
            "data:image/png;base64,aGVsbG8",
            "data:image/png;base64,====",
            "data:image/p ng;base64,aGVsbG8=",
        ] {
            assert!(image_data_url_mime(bad).is_err(), "{bad}");
        }
    }
}
