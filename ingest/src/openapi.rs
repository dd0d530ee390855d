//! The OpenAPI 3 description of the API, served at `/openapi.json`.
//!
//! Written by hand (a derive crate would add a large dependency for a few dozen lines), and
//! kept true by tests: every documented operation must be routed, every route documented, and
//! the live snapshot's schema must name every field and alert kind a snapshot carries.

use serde_json::{Value, json};

fn error_responses(codes: &[&str]) -> Value {
    let mut map = serde_json::Map::new();
    for code in codes {
        let description = match *code {
            "400" => {
                "Malformed JSON or an invalid field (`error`: malformed_json, invalid_body, invalid_field, ...)"
            }
            "401" => "No or invalid token (`error`: missing_token, invalid_token)",
            "403" => "The token's role may not do this (`error`: forbidden)",
            "404" => "Not found (`error`: unknown_person, no_doses, ...)",
            "406" => "The client does not accept server-sent events (`error`: not_acceptable)",
            "409" => "Conflict (`error`: dose_conflict, person_code_taken)",
            "413" => "Body too large (`error`: body_too_large)",
            "422" => {
                "A rule refused the request; `rule` names it (too_early, dose_out_of_sequence, lot_expired, lot_exhausted, lot_not_at_site, unknown_lot, unknown_person, product_mismatch, series_complete, dose_already_recorded, administered_in_future, administered_before_birth, lot_product_mismatch, invalid_pass)"
            }
            "503" => {
                "Saturated, or the store did not confirm the write (a ScyllaDB timeout, an overloaded or unreachable replica), so nothing was acknowledged. Retry after `Retry-After` seconds with the same dose id: a retry is never a second dose (`error`: overloaded, dose_in_progress, store_unavailable)"
            }
            _ => "Error",
        };
        map.insert(
            (*code).to_owned(),
            json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}),
        );
    }
    Value::Object(map)
}

fn op(summary: &str, roles: &str, body: Option<&str>, ok: (&str, &str), errors: &[&str]) -> Value {
    let mut responses = error_responses(errors);
    let ok_content = if ok.1.is_empty() {
        json!({"description": "OK"})
    } else {
        json!({"description": "OK", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{}", ok.1)}}}})
    };
    if let Value::Object(map) = &mut responses {
        map.insert(ok.0.to_owned(), ok_content);
    }
    let mut operation = json!({"summary": summary, "description": format!("Roles: {roles}."), "responses": responses});
    if roles == "public" {
        operation["security"] = json!([]);
    }
    if let Some(schema) = body {
        operation["requestBody"] = json!({
            "required": true,
            "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}
        });
    }
    operation
}

fn person_code_param() -> Value {
    json!([{"name": "person_code", "in": "path", "required": true, "schema": {"type": "string", "maxLength": 32}}])
}

/// The whole document.
pub fn document() -> Value {
    let mut certificate = op(
        "A person's current certificate",
        "site, registrar, admin",
        None,
        ("200", ""),
        &["400", "401", "403", "404"],
    );
    certificate["parameters"] = json!([
        {"name": "person_code", "in": "path", "required": true, "schema": {"type": "string"}},
        {"name": "format", "in": "query", "required": false, "schema": {"type": "string", "enum": ["text", "svg", "png", "terminal"], "default": "text"}}
    ]);
    certificate["responses"]["200"] = json!({"description": "The certificate as VC1 text, SVG, PNG or terminal blocks; headers X-Certificate-Id and X-Certificate-Status",
        "content": {"text/plain": {}, "image/svg+xml": {}, "image/png": {}}});
    let mut show = op(
        "A person with their doses and the next dose due",
        "site, registrar, admin",
        None,
        ("200", "PersonRecord"),
        &["400", "401", "403", "404"],
    );
    show["parameters"] = person_code_param();
    let mut pass = op(
        "A person's pre-registration QR (RG1)",
        "site, registrar, admin",
        None,
        ("200", "RegistrationAnswer"),
        &["400", "401", "403", "404"],
    );
    pass["parameters"] = person_code_param();
    let mut people = op(
        "People in person-code order",
        "admin",
        None,
        ("200", "PeoplePage"),
        &["400", "401", "403"],
    );
    people["parameters"] = json!([
        {"name": "after", "in": "query", "schema": {"type": "string"}},
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 10000, "default": 100}}
    ]);
    let mut correct_person = op(
        "Correct a person's details: revokes every certificate issued with the old ones, issues the corrected one, audits",
        "admin",
        Some("PersonCorrection"),
        ("200", "CorrectionAnswer"),
        &["400", "401", "403", "404", "503"],
    );
    correct_person["parameters"] = person_code_param();
    let mut correct_dose = op(
        "Correct a wrongly recorded dose (lot, time, vaccinator): revokes affected certificates, issues the corrected one, audits",
        "admin",
        Some("DoseCorrection"),
        ("200", "CorrectionAnswer"),
        &["400", "401", "403", "404", "422", "503"],
    );
    correct_dose["parameters"] = json!([{"name": "dose_id", "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}}]);
    let mut audit = op(
        "The newest audit records",
        "admin",
        None,
        ("200", ""),
        &["400", "401", "403"],
    );
    let mut allocation = op(
        "Proposes how to split a shipment of one product between sites, districts or provinces (those that give or stock it): from recent uptake, stock on hand, doses owed (due within the horizon, not lapsed), people still to start and site capacity; never more than the shipment, in whole units, with days of supply before and after, people lapsed, doses received, and how fresh the analytics are. 503 analytics_unavailable (with Retry-After) when the analytics backend does not answer within analytics.read_timeout_seconds",
        "admin, observer",
        None,
        ("200", "AllocationAnswer"),
        &["400", "401", "403", "404", "409", "503"],
    );
    allocation["parameters"] = json!([
        {"name": "product", "in": "query", "required": true, "schema": {"type": "string"}},
        {"name": "quantity", "in": "query", "required": true, "description": "doses in the shipment", "schema": {"type": "integer", "minimum": 0, "maximum": 1_000_000_000u64}},
        {"name": "level", "in": "query", "schema": {"type": "string", "enum": ["site", "district", "province"], "default": "site"}},
        {"name": "unit", "in": "query", "description": "doses per vial or box (server default: allocation.unit_doses)", "schema": {"type": "integer", "minimum": 1, "maximum": 100_000}},
        {"name": "window_days", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 366}},
        {"name": "horizon_days", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 366}},
        {"name": "owed_lapse_days", "in": "query", "description": "days overdue after which a person owed a dose is lapsed, not owed (server default: allocation.owed_lapse_days)", "schema": {"type": "integer", "minimum": 0, "maximum": 3650}}
    ]);
    let mut uptake = op(
        "Doses per area per day or hour (UTC buckets), from the analytics rollups",
        "admin, observer",
        None,
        ("200", "UptakeAnswer"),
        &["400", "401", "403", "503"],
    );
    uptake["parameters"] = json!([
        {"name": "level", "in": "query", "schema": {"type": "string", "enum": ["province", "district", "site"], "default": "province"}},
        {"name": "granularity", "in": "query", "schema": {"type": "string", "enum": ["day", "hour"], "default": "day"}},
        {"name": "days", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 366, "default": 14}},
        {"name": "product", "in": "query", "schema": {"type": "string"}},
        {"name": "province", "in": "query", "schema": {"type": "string"}}
    ]);
    audit["parameters"] = json!([{"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 10000, "default": 100}}]);
    let mut metrics = op(
        "Prometheus metrics",
        "admin, observer",
        None,
        ("200", ""),
        &["401", "403"],
    );
    metrics["responses"]["200"] =
        json!({"description": "Prometheus text exposition", "content": {"text/plain": {}}});
    let mut live_stream = op(
        "Server-sent events: `event: snapshot` once a second, each `data:` one LiveSnapshot (`event: error` with a message when one cannot be built); ends when the server shuts down. Send `Accept: text/event-stream`. 503 `too_many_streams` with `Retry-After` when `[live] max_streams` are open",
        "admin, observer",
        None,
        ("200", ""),
        &["401", "403", "406", "503"],
    );
    live_stream["responses"]["200"] = json!({"description": "An event stream of LiveSnapshot documents",
        "content": {"text/event-stream": {"schema": {"type": "string"}}}});

    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "vaxcamp",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Mass-vaccination campaign API: register, check in, record doses, signed QR certificates. Every error body is {\"error\": code, \"message\": text}."
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas(),
        },
        "security": [{"bearer": []}],
        "paths": {
            "/healthz": {"get": op("Liveness", "public", None, ("200", "Health"), &[])},
            "/metrics": {"get": metrics},
            "/openapi.json": {"get": op("This document", "any token", None, ("200", ""), &["401"])},
            "/v1/trust": {"get": op("The issuer's trust list (public keys by kid)", "public", None, ("200", "TrustList"), &[])},
            "/v1/revocations": {
                "get": op("Revoked certificate ids", "public", None, ("200", "RevocationList"), &[]),
                "post": op("Revoke one certificate, with a reason (audited)", "admin", Some("RevokeRequest"), ("201", ""), &["400", "401", "403"])
            },
            "/v1/audit": {"get": audit},
            "/v1/people/{person_code}/corrections": {"post": correct_person},
            "/v1/doses/{dose_id}/corrections": {"post": correct_dose},
            "/v1/verify": {"post": op("Verify a VC1 certificate or RG1 pass", "public", Some("QrText"), ("200", "VerifyAnswer"), &["400", "413"])},
            "/v1/registrations": {"post": op("Pre-register a citizen; 200 when the same registration exists", "registrar, site, admin", Some("RegistrationRequest"), ("201", "RegistrationAnswer"), &["400", "401", "403", "409", "413"])},
            "/v1/checkins": {"post": op("Check in a scanned pass (or a typed person code)", "site, admin", Some("CheckInRequest"), ("200", "PersonRecord"), &["400", "401", "403", "404", "422"])},
            "/v1/people": {"get": people},
            "/v1/people/{person_code}": {"get": show},
            "/v1/people/{person_code}/pass": {"get": pass},
            "/v1/people/{person_code}/certificate": {"get": certificate},
            "/v1/doses": {"post": op("Record a dose; 201 with its certificate, 200 on an identical retry", "site, admin", Some("DoseRequest"), ("201", "DoseAnswer"), &["400", "401", "403", "409", "413", "422", "503"])},
            "/v1/doses:batch": {"post": op("Record up to 1000 doses; per-dose results", "site, admin", Some("BatchRequest"), ("200", "BatchAnswer"), &["400", "401", "403", "413"])},
            "/v1/doses:lookup": {"post": op("Which dose ids are stored, and how many copies (a site token: its own site's doses only)", "admin, site", Some("LookupRequest"), ("200", "LookupAnswer"), &["400", "401", "403"])},
            "/v1/sites": {
                "get": op("Sites with lots and stock", "admin, observer", None, ("200", "SiteList"), &["401", "403"]),
                "post": op("Add a site; answers its token once", "admin", Some("Site"), ("201", "SiteAnswer"), &["400", "401", "403"])
            },
            "/v1/lots": {"post": op("Allocate a lot's doses to a site", "admin", Some("Lot"), ("201", ""), &["400", "401", "403"])},
            "/v1/areas": {
                "get": op("Province and district names, as the console shows them", "admin, observer", None, ("200", "AreaNames"), &["401", "403"]),
                "put": op("Replace every province and district name (400 `invalid_areas` lists the bad entries and changes nothing); answers how many", "admin", Some("AreaNames"), ("200", ""), &["400", "401", "403", "413"])
            },
            "/v1/stats": {"get": op("Live counters for the console", "admin, observer", None, ("200", "Stats"), &["401", "403"])},
            "/v1/live": {"get": op("The campaign now, for the console: doses/s and history, totals, per-site figures, stock and days of supply, latency, queues, errors, alerts", "admin, observer", None, ("200", "LiveSnapshot"), &["401", "403"])},
            "/v1/live/stream": {"get": live_stream},
            "/v1/allocation": {"get": allocation},
            "/v1/analytics/uptake": {"get": uptake},
        }
    })
}

fn schemas() -> Value {
    let date = json!({"type": "string", "format": "date"});
    let datetime = json!({"type": "string", "format": "date-time"});
    let area = json!({"type": "object", "required": ["province", "district"], "additionalProperties": false, "properties": {
        "province": {"type": "string"}, "district": {"type": "string"}, "commune": {"type": "string", "nullable": true}}});
    let dose = json!({"type": "object", "properties": {
        "dose_id": {"type": "string", "format": "uuid"}, "person_code": {"type": "string"}, "product": {"type": "string"},
        "lot": {"type": "string"}, "dose_number": {"type": "integer"}, "site_id": {"type": "string"},
        "vaccinator": {"type": "string"}, "administered_at": datetime, "recorded_at": datetime}});
    let person = json!({"type": "object", "properties": {
        "person_code": {"type": "string"}, "name": {"type": "string"}, "birth_date": date, "phone": {"type": "string", "nullable": true},
        "area": area, "priority_group": {"type": "integer"}, "registered_at": datetime}});
    json!({
        "Error": {"type": "object", "required": ["error", "message"], "properties": {
            "error": {"type": "string", "description": "stable code"}, "message": {"type": "string"},
            "field": {"type": "string"}, "rule": {"type": "string"}}},
        "Health": {"type": "object", "properties": {"status": {"type": "string"}, "backend": {"type": "string"}, "writer": {"type": "boolean", "description": "false on a ScyllaDB replica without the writer lease"}, "uptime_s": {"type": "integer"}}},
        "Area": area,
        "Dose": dose,
        "Person": person,
        "RegistrationRequest": {"type": "object", "required": ["name", "birth_date", "area"], "additionalProperties": false, "properties": {
            "person_code": {"type": "string", "maxLength": 32, "description": "national ID; generated when absent"},
            "name": {"type": "string", "maxLength": 120}, "birth_date": date, "phone": {"type": "string"},
            "area": {"$ref": "#/components/schemas/Area"}, "priority_group": {"type": "integer", "minimum": 1, "maximum": 10}}},
        "RegistrationAnswer": {"type": "object", "properties": {
            "person_code": {"type": "string"}, "registration_qr": {"type": "string", "description": "RG1:..."},
            "created": {"type": "boolean"}, "person": {"$ref": "#/components/schemas/Person"}}},
        "CheckInRequest": {"type": "object", "additionalProperties": false, "description": "exactly one of qr or person_code", "properties": {
            "qr": {"type": "string"}, "person_code": {"type": "string"}}},
        "PersonRecord": {"type": "object", "properties": {
            "person": {"$ref": "#/components/schemas/Person"},
            "doses": {"type": "array", "items": {"$ref": "#/components/schemas/Dose"}},
            "next_dose": {"type": "object", "properties": {
                "dose_number": {"type": "integer", "nullable": true}, "product": {"type": "string", "nullable": true},
                "mixable_with": {"type": "array", "items": {"type": "string"}}, "earliest": {"type": "string", "format": "date", "nullable": true},
                "eligible_today": {"type": "boolean"}, "reason": {"type": "string", "nullable": true}, "series_complete": {"type": "boolean"}}},
            "eligible_today": {"type": "boolean"}, "reason": {"type": "string", "nullable": true}}},
        "PeoplePage": {"type": "object", "properties": {
            "people": {"type": "array", "items": {"$ref": "#/components/schemas/Person"}}, "next": {"type": "string", "nullable": true}}},
        "DoseRequest": {"type": "object", "required": ["dose_id", "person_code", "lot", "dose_number", "vaccinator", "administered_at"], "additionalProperties": false, "properties": {
            "dose_id": {"type": "string", "format": "uuid", "description": "made by the client once; reused on retries"},
            "person_code": {"type": "string"}, "lot": {"type": "string", "description": "lot number on the vial"},
            "dose_number": {"type": "integer", "minimum": 1, "maximum": 10}, "vaccinator": {"type": "string", "maxLength": 80},
            "administered_at": datetime, "product": {"type": "string", "description": "optional cross-check against the lot"},
            "site_id": {"type": "string", "description": "admin tokens only (ledger imports)"}}},
        "DoseAnswer": {"type": "object", "properties": {
            "dose": {"$ref": "#/components/schemas/Dose"}, "certificate": {"type": "string", "description": "VC1:..."},
            "certificate_id": {"type": "string"}, "series_status": {"type": "string", "enum": ["partial", "complete"]}}},
        "BatchRequest": {"type": "object", "required": ["doses"], "additionalProperties": false, "properties": {
            "doses": {"type": "array", "maxItems": 1000, "items": {"$ref": "#/components/schemas/DoseRequest"}}}},
        "BatchAnswer": {"type": "object", "properties": {
            "results": {"type": "array", "items": {"type": "object", "properties": {
                "dose_id": {"type": "string"}, "status": {"type": "integer"}, "error": {"type": "string"}, "message": {"type": "string"}}}},
            "created": {"type": "integer"}, "duplicates": {"type": "integer"}, "refused": {"type": "integer"}, "failed": {"type": "integer"}}},
        "LookupRequest": {"type": "object", "required": ["dose_ids"], "additionalProperties": false, "properties": {
            "dose_ids": {"type": "array", "maxItems": 10000, "items": {"type": "string", "format": "uuid"}}}},
        "LookupAnswer": {"type": "object", "properties": {
            "found": {"type": "array", "items": {"type": "object", "properties": {
                "dose_id": {"type": "string"}, "person_code": {"type": "string"}, "dose_number": {"type": "integer"}, "copies": {"type": "integer"}}}},
            "missing": {"type": "array", "items": {"type": "string"}}}},
        "QrText": {"type": "object", "required": ["qr"], "additionalProperties": false, "properties": {"qr": {"type": "string", "maxLength": 4096}}},
        "VerifyAnswer": {"type": "object", "properties": {
            "valid": {"type": "boolean"}, "kind": {"type": "string", "enum": ["certificate", "registration"]},
            "kid": {"type": "string"}, "status": {"type": "string"}, "colour": {"type": "string"},
            "error": {"type": "string"}, "message": {"type": "string"}, "certificate": {"type": "object"}, "pass": {"type": "object"}}},
        "TrustList": {"type": "object", "properties": {"issuer": {"type": "string"}, "keys": {"type": "array", "items": {"type": "object", "properties": {
            "kid": {"type": "string"}, "purpose": {"type": "string"}, "public_key": {"type": "string"},
            "valid_from": {"type": "integer"}, "valid_until": {"type": "integer", "nullable": true}, "status": {"type": "string"}}}}}},
        "RevocationList": {"type": "object", "properties": {"certificate_ids": {"type": "array", "items": {"type": "string"}}}},
        "Site": {"type": "object", "required": ["site_id", "name", "area", "daily_capacity"], "additionalProperties": false, "properties": {
            "site_id": {"type": "string"}, "name": {"type": "string"}, "area": {"$ref": "#/components/schemas/Area"}, "daily_capacity": {"type": "integer"}}},
        "SiteAnswer": {"type": "object", "properties": {"site": {"$ref": "#/components/schemas/Site"}, "token": {"type": "string"}}},
        "SiteList": {"type": "object", "properties": {"sites": {"type": "array", "items": {"type": "object"}}}},
        "Lot": {"type": "object", "required": ["lot_number", "site_id", "product", "expires", "quantity"], "additionalProperties": false, "properties": {
            "lot_number": {"type": "string"}, "site_id": {"type": "string"}, "product": {"type": "string"}, "expires": date, "quantity": {"type": "integer"}}},
        "Stats": {"type": "object"},
        "AreaNames": {"type": "object", "required": ["areas"], "additionalProperties": false, "properties": {
            "areas": {"type": "object", "additionalProperties": {"type": "string", "minLength": 1, "maxLength": 100},
                "description": "name by key: a province code (`01`) or `province/district` (`01/001`)"}}},
        "AllocationAnswer": {"type": "object", "description": "see analytics/src/allocation.rs for the method", "properties": {
            "analytics_backend": {"type": "string"}, "generated_at": {"type": "integer"},
            "analytics": {"$ref": "#/components/schemas/AnalyticsFreshness"},
            "plan": {"type": "object", "properties": {
                "request": {"type": "object"}, "need_doses": {"type": "integer"}, "allocated_doses": {"type": "integer"},
                "held_back_doses": {"type": "integer"}, "unmet_need_doses": {"type": "integer"}, "fill_level_days": {"type": "number", "nullable": true},
                "unplaced_registrations": {"type": "integer"}, "lapsed_doses": {"type": "integer", "description": "people more than owed_lapse_days overdue: to call back, not planned for"},
                "notes": {"type": "array", "items": {"type": "string"}},
                "lines": {"type": "array", "items": {"type": "object", "properties": {
                    "area": {"type": "string"}, "name": {"type": "string"}, "site_count": {"type": "integer"}, "daily_rate": {"type": "number"},
                    "stock_on_hand": {"type": "integer"}, "owed_doses": {"type": "integer"}, "lapsed_doses": {"type": "integer"},
                    "received_doses": {"type": "integer", "description": "doses of the product delivered to the line's sites: lots received and adjustments"},
                    "remaining_registrations": {"type": "integer"},
                    "planned_doses": {"type": "integer"}, "need_doses": {"type": "integer"}, "allocated_doses": {"type": "integer"},
                    "days_of_supply_before": {"type": "number", "nullable": true}, "days_of_supply_after": {"type": "number", "nullable": true}}}}}}}},
        "AnalyticsFreshness": {"type": "object", "description": "how current the analytics figures are", "properties": {
            "as_of": {"type": "integer", "description": "unix seconds: every dose committed before this is counted"},
            "stale": {"type": "boolean", "description": "the outbox lags more than analytics.lag_alert_seconds, or dropped rows"},
            "lag_seconds": {"type": "integer"}, "outbox_rows": {"type": "integer"}, "dropped_rows": {"type": "integer"},
            "last_error": {"type": "string", "nullable": true}, "note": {"type": "string", "nullable": true}}},
        "UptakeAnswer": {"type": "object", "properties": {
            "analytics_backend": {"type": "string"}, "analytics": {"$ref": "#/components/schemas/AnalyticsFreshness"},
            "level": {"type": "string"}, "granularity": {"type": "string"},
            "since": {"type": "integer"}, "until": {"type": "integer"},
            "points": {"type": "array", "items": {"type": "object", "properties": {
                "area": {"type": "string"}, "bucket": {"type": "string", "format": "date-time"}, "doses": {"type": "integer"}}}}}},
        "LiveSnapshot": {"type": "object", "description": "Times are unix seconds. Days are the campaign's: midnight to midnight at `[campaign] utc_offset` (`utc_offset_s`), and a dose counts on the day it was given; \"since start\" counts from the server's start (see ingest/src/live.rs)", "properties": {
            "generated_at": {"type": "integer"}, "started_at": {"type": "integer"},
            "today_since": {"type": "integer", "description": "when `doses.today` starts counting: the campaign's midnight, or the server's start if the day's earlier doses could not be read at start-up"},
            "utc_offset_s": {"type": "integer", "description": "the campaign's time zone, seconds east of UTC (25200 for Viet Nam)"},
            "backend": {"type": "string"},
            "thresholds": {"type": "object"},
            "doses": {"type": "object", "properties": {"total": {"type": "integer"}, "today": {"type": "integer"}, "since_start": {"type": "integer"},
                "per_s_now": {"type": "number"}, "per_s_1m": {"type": "number"}, "history_per_s": {"type": "array", "items": {"type": "integer"}}, "history_end": {"type": "integer"}}},
            "certificates": {"type": "object", "properties": {"partial": {"type": "integer"}, "complete": {"type": "integer"}}},
            "registrations": {"type": "object", "properties": {"total": {"type": "integer"}, "since_start": {"type": "integer"}}},
            "checkins_since_start": {"type": "integer"}, "certificates_signed": {"type": "integer"},
            "latency_ms": {"type": "object"},
            "queues": {"type": "object", "properties": {"capacity": {"type": "integer"}, "depths": {"type": "array", "items": {"type": "integer"}}}},
            "errors": {"type": "object", "properties": {"total": {"type": "integer"}, "last_minute": {"type": "integer"},
                "by_kind": {"type": "array", "items": {"type": "object", "properties": {"kind": {"type": "string"}, "count": {"type": "integer"}}}}}},
            "stock": {"type": "object"},
            "sites": {"type": "array", "items": {"type": "object", "properties": {
                "site_id": {"type": "string"}, "name": {"type": "string"}, "province": {"type": "string"}, "district": {"type": "string"},
                "commune": {"type": "string", "nullable": true}, "daily_capacity": {"type": "integer"}, "doses_today": {"type": "integer"},
                "doses_since_start": {"type": "integer"}, "doses_total": {"type": "integer"}, "rate_per_s": {"type": "number"},
                "last_dose_at": {"type": "integer", "nullable": true}, "remaining": {"type": "integer"},
                "uptake_per_day": {"type": "number", "nullable": true}, "days_of_supply": {"type": "number", "nullable": true},
                "low_stock": {"type": "boolean"}, "silent": {"type": "boolean"},
                "errors_last_minute": {"type": "integer", "description": "dose requests from the site that failed over the last 60 s"},
                "errors_since_start": {"type": "integer"},
                "stock": {"type": "array", "items": {"type": "object"}}}}},
            "area_names": {"type": "object", "additionalProperties": {"type": "string"},
                "description": "names of the provinces (`01`) and districts (`01/001`) the sites stand in, where the campaign has them (`vaxcamp import areas`); an area without a name is left out"},
            "analytics": {"type": "object", "description": "how far the analytics backend is behind the dose path", "properties": {
                "backend": {"type": "string"}, "outbox_rows": {"type": "integer"}, "outbox_bytes": {"type": "integer"}, "outbox_max_bytes": {"type": "integer"},
                "lag_ms": {"type": "integer", "description": "age of the oldest row waiting"},
                "dropped_rows": {"type": "integer", "description": "rows dropped because the outbox was full (all time)"},
                "set_aside": {"type": "integer", "description": "rows the backend cannot hold, set aside (all time)"},
                "last_error": {"type": "string", "nullable": true}, "lag_alert_s": {"type": "integer"}}},
            "alerts": {"type": "array", "items": {"type": "object", "properties": {
                "severity": {"type": "string", "enum": ["critical", "warning"]},
                "kind": {"type": "string", "enum": crate::live::ALERT_KINDS},
                "site_id": {"type": "string", "nullable": true},
                "shard": {"type": "integer", "description": "the shard of a `queue_near_full` alert; absent from the others"},
                "message": {"type": "string", "description": "figures that change from one snapshot to the next; an alert is identified by kind, site_id and shard"}}}}}},
        "RevokeRequest": {"type": "object", "required": ["certificate_id", "reason"], "additionalProperties": false, "properties": {
            "certificate_id": {"type": "string"}, "reason": {"type": "string"}}},
        "PersonCorrection": {"type": "object", "required": ["reason"], "additionalProperties": false, "properties": {
            "reason": {"type": "string"}, "name": {"type": "string"}, "birth_date": date, "phone": {"type": "string"},
            "area": {"$ref": "#/components/schemas/Area"}, "priority_group": {"type": "integer"}}},
        "DoseCorrection": {"type": "object", "required": ["reason"], "additionalProperties": false, "properties": {
            "reason": {"type": "string"}, "lot": {"type": "string"}, "administered_at": datetime, "vaccinator": {"type": "string"}}},
        "CorrectionAnswer": {"type": "object", "properties": {
            "person": {"$ref": "#/components/schemas/Person"}, "doses": {"type": "array", "items": {"$ref": "#/components/schemas/Dose"}},
            "certificate": {"type": "string", "nullable": true}, "certificate_id": {"type": "string", "nullable": true},
            "revoked_certificates": {"type": "array", "items": {"type": "string"}}}},
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeSet;
    use std::sync::Arc;

    use serde_json::Value;
    use store::{Area, AreaCode, Dose, DoseId, LotNumber, PersonCode, ProductCode, Site, SiteId};

    use crate::campaign::Campaign;
    use crate::live::{ALERT_KINDS, AnalyticsFigures, Live, LiveConfig, LiveInputs, LotLevel};

    /// Keys of `value` that `schema` does not list, where it lists properties, at any depth.
    fn undocumented(schema: &Value, value: &Value, path: &str, missing: &mut Vec<String>) {
        match value {
            Value::Object(fields) => {
                let Some(properties) = schema["properties"].as_object() else {
                    return;
                };
                for (key, field) in fields {
                    match properties.get(key) {
                        Some(property) => {
                            undocumented(property, field, &format!("{path}.{key}"), missing);
                        }
                        None => missing.push(format!("{path}.{key}")),
                    }
                }
            }
            Value::Array(items) => {
                for item in items {
                    undocumented(&schema["items"], item, &format!("{path}[]"), missing);
                }
            }
            _ => {}
        }
    }

    /// A snapshot of a campaign in trouble, raising every kind of alert.
    fn troubled_snapshot() -> Value {
        const T0: i64 = 1_893_571_200;
        let site = |id: &str| Site {
            site_id: SiteId::new(id).unwrap(),
            name: format!("Site {id}"),
            area: Area {
                province: AreaCode::new("01").unwrap(),
                district: AreaCode::new("001").unwrap(),
                commune: None,
            },
            daily_capacity: 1000,
        };
        let sites = vec![site("a"), site("b")];
        let campaign = Campaign::default();
        for product in store::builtin_products() {
            campaign.upsert_product(product);
        }
        for site in &sites {
            campaign.upsert_site(site.clone());
        }
        let live = Live::starting_at(Arc::new(campaign), LiveConfig::default(), T0);
        // Site b gives a dose after 700 s (a, silent since the start, is not); a's requests fail.
        let at = time::OffsetDateTime::from_unix_timestamp(T0 + 700).unwrap();
        live.record_committed(&[Dose {
            dose_id: DoseId(uuid::Uuid::new_v4()),
            person_code: PersonCode::new("P1").unwrap(),
            product: ProductCode::new("COMIRNATY").unwrap(),
            lot_number: LotNumber::new("L1").unwrap(),
            dose_number: 1,
            site_id: SiteId::new("b").unwrap(),
            vaccinator: "nurse".into(),
            administered_at: at,
            recorded_at: at,
        }]);
        for _ in 0..20 {
            live.record_outcome_at(Some(&sites[0].site_id), "busy", None, T0 + 700);
        }
        let lot = |id: &str, remaining| LotLevel {
            site_id: SiteId::new(id).unwrap(),
            product: ProductCode::new("COMIRNATY").unwrap(),
            remaining,
            used: 1,
        };
        let snapshot = live.snapshot_at(
            T0 + 701,
            LiveInputs {
                backend: "embedded".into(),
                sites,
                lots: vec![lot("a", 0), lot("b", 2)],
                queue_depths: vec![0, 1_000],
                analytics: AnalyticsFigures {
                    backend: "embedded".into(),
                    outbox_rows: 10,
                    outbox_max_bytes: 1 << 20,
                    lag_ms: 120_000,
                    dropped_rows: 3,
                    set_aside: 1,
                    lag_alert_s: 60,
                    ..AnalyticsFigures::default()
                },
                ..LiveInputs::default()
            },
        );
        serde_json::to_value(&snapshot).unwrap()
    }

    /// The live snapshot's schema names every field the server sends, and every alert kind.
    #[test]
    fn the_live_snapshot_schema_documents_what_is_sent() {
        let document = super::document();
        let schema = &document["components"]["schemas"]["LiveSnapshot"];
        let snapshot = troubled_snapshot();
        let mut missing = Vec::new();
        undocumented(schema, &snapshot, "LiveSnapshot", &mut missing);
        assert_eq!(missing, Vec::<String>::new());

        let raised: BTreeSet<&str> = snapshot["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|alert| alert["kind"].as_str().unwrap())
            .collect();
        assert_eq!(
            raised,
            BTreeSet::from(ALERT_KINDS),
            "{}",
            snapshot["alerts"]
        );
        let documented: BTreeSet<&str> =
            schema["properties"]["alerts"]["items"]["properties"]["kind"]["enum"]
                .as_array()
                .unwrap()
                .iter()
                .map(|kind| kind.as_str().unwrap())
                .collect();
        assert_eq!(documented, raised);
        assert!(
            schema["description"]
                .as_str()
                .unwrap()
                .contains("utc_offset")
        );
    }
}
