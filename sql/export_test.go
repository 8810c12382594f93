package sql

// WithMaxVersion returns cfg set to stop after migration version v, without
// River's migrations and the grants: a database as a release that ended at v
// left it (give it the grants.sql of that release yourself if it matters).
func WithMaxVersion(cfg Config, v int) Config {
	cfg.maxVersion = v
	return cfg
}
