-- The client's own id for a request (its x-request-id or x-correlation-id), recorded beside
-- the server-generated request id, which alone keys the log (issue 19: a client-chosen key
-- could collide with another client's, overwrite feedback joins or steer the QA sample).
ALTER TABLE predictions ADD COLUMN correlation_id TEXT;
