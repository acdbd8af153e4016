package config

import (
	"fmt"
	"strings"

	"github.com/pgshard/pgshard/shardmap"
)

// Rules converts the sharding section to shard map rules. A table without
// a `type` is refused: the key type decides the hash, so it must be known
// before the first row is routed.
func (c *Config) Rules() (shardmap.Rules, error) {
	r := shardmap.Rules{Buckets: c.Sharding.Buckets, Tables: map[string]shardmap.Table{}, Reference: map[string]bool{}}
	for i, t := range c.Sharding.Tables {
		if t.Type == "" {
			return r, fmt.Errorf("sharding.tables[%d] (%s): type is required (smallint, integer, bigint, text, varchar or uuid)", i, t.Name)
		}
		kt, err := shardmap.ParseKeyType(t.Type)
		if err != nil {
			return r, fmt.Errorf("sharding.tables[%d].type: %w", i, err)
		}
		name := identifier(t.Name)
		r.Tables[name] = shardmap.Table{Name: name, Key: identifier(t.Key), Type: kt}
	}
	for _, name := range c.Sharding.Reference {
		r.Reference[identifier(name)] = true
	}
	return r, nil
}

// identifier is a table or column name of the config as Postgres reads an
// identifier: folded to lower case, unless written in double quotes
// ('"Customers"', as Sequelize and Prisma name tables), which keep its
// case. (Without the quotes, Customers is the table customers, as in SQL.)
func identifier(s string) string {
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' && !strings.Contains(s[1:len(s)-1], `"`) {
		return s[1 : len(s)-1]
	}
	return strings.ToLower(s)
}

// MapShards lists the configured shards for the shard map.
func (c *Config) MapShards() []shardmap.Shard {
	out := make([]shardmap.Shard, len(c.Shards))
	for i, s := range c.Shards {
		out[i] = shardmap.Shard{Name: s.Name, DSN: s.DSN, AdminDSN: s.AdminDSN}
	}
	return out
}

// CatalogDSN is where the shard map lives: `catalog:` or the first shard.
func (c *Config) CatalogDSN() string {
	if c.Catalog != "" {
		return c.Catalog
	}
	return c.Shards[0].DSN
}
