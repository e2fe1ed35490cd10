# Writes a TOML document from an attribute set, with builtins only (no nixpkgs), so
# tests/tests/infra.rs can evaluate it with plain `nix-instantiate --eval` and feed
# the result to the real fleet-agent.
#
# Values: strings, integers, booleans, lists of these, and attribute sets of these
# written as inline tables (TOML 1.0: one line each). Strings are written as JSON
# strings, whose escapes (\" \\ \n \r \t \uXXXX) are all valid TOML basic-string
# escapes. null is not a TOML value: leave such keys out before calling this.
let
  inherit (builtins) attrNames concatStringsSep isAttrs isBool isInt isList isString match toJSON typeOf;

  key = k: if match "[A-Za-z0-9_-]+" k != null then k else toJSON k;

  value = path: v:
    if isBool v then (if v then "true" else "false")
    else if isInt v then toString v
    else if isString v then toJSON v
    else if isList v then "[" + concatStringsSep ", " (map (value path) v) + "]"
    else if isAttrs v then
      "{ " + concatStringsSep ", " (map (k: "${key k} = ${value "${path}.${k}" v.${k}}") (attrNames v)) + " }"
    else throw "toml.nix: ${path} is a ${typeOf v}, which fleet's TOML writer cannot write";
in
attrs: concatStringsSep "" (map (k: "${key k} = ${value k attrs.${k}}\n") (attrNames attrs))
