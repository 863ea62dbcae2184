package record

import (
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"sort"
	"time"
)

// retainedFile is a finished recording that retention may delete.
type retainedFile struct {
	rel  string // below the root, "/"-separated
	size int64
	mod  time.Time
}

// applyRetention deletes this block's finished files that are older than
// max_age, then the oldest ones while together they exceed max_total_size.
// It runs after a file is finished, on that stream's goroutine. It only ever
// considers regular files below the root whose names the template could
// have produced, and never a file being written, so an operator's other
// files in the same directory are safe.
func (r *Recorder) applyRetention(log *slog.Logger) {
	set := &r.set
	if set.maxAge <= 0 && set.maxTotal <= 0 {
		return
	}
	r.retention.Lock()
	defer r.retention.Unlock()
	root := set.tmpl.root
	rt, err := os.OpenRoot(root)
	if err != nil {
		log.Warn("retention: cannot open the recording root", "root", root, "err", err)
		return
	}
	defer rt.Close()
	var files []retainedFile
	var total int64
	_ = fs.WalkDir(rt.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !d.Type().IsRegular() || !set.tmpl.matches(p) {
			return nil
		}
		if r.isActive(filepath.Join(root, filepath.FromSlash(p))) {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		files = append(files, retainedFile{rel: p, size: info.Size(), mod: info.ModTime()})
		total += info.Size()
		return nil
	})
	sort.Slice(files, func(i, j int) bool { return files[i].mod.Before(files[j].mod) })
	now := time.Now()
	for _, f := range files {
		expired := set.maxAge > 0 && now.Sub(f.mod) > set.maxAge
		over := set.maxTotal > 0 && total > set.maxTotal
		if !expired && !over {
			break // files are oldest first: the rest are younger still
		}
		reason := "max_total_size"
		if expired {
			reason = "max_age"
		}
		if err := rt.Remove(filepath.FromSlash(f.rel)); err != nil {
			log.Warn("retention: cannot delete a recording", "file", filepath.Join(root, f.rel), "err", err)
			continue
		}
		total -= f.size
		r.deleted.Inc()
		log.Info("recording deleted", "file", filepath.Join(root, f.rel), "bytes", f.size, "reason", reason)
		r.removeEmptyDirs(rt, path.Dir(f.rel))
	}
}

// removeEmptyDirs removes dir and its parents below the root while they
// are empty. It holds dirs so that no file is being created in one of them
// at that moment.
func (r *Recorder) removeEmptyDirs(rt *os.Root, dir string) {
	r.dirs.Lock()
	defer r.dirs.Unlock()
	for dir != "." && dir != "/" && dir != "" {
		if rt.Remove(filepath.FromSlash(dir)) != nil {
			return // not empty (or gone): stop climbing
		}
		dir = path.Dir(dir)
	}
}
