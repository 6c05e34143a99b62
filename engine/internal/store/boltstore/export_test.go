package boltstore

import (
	bolt "go.etcd.io/bbolt"
)

// SetLayoutForTest overwrites the layout version of a closed database file.
func SetLayoutForTest(path, layout string) error {
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		return err
	}
	defer db.Close()
	return db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keyLayout, []byte(layout))
	})
}

// DisableGroupCommitForTest makes s commit every write in its own
// transaction. Call before using s.
func DisableGroupCommitForTest(s *Store) { s.noGroupCommit = true }
