package record

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// retainedFile is a finished recording that retention may delete.
type retainedFile struct {
	rel  string // below the root, "/"-separated
	size int64
	mod  time.Time
}

// faststartSuffix ends the name of the temporary file a faststart rewrite
// writes beside the recording ("0001.mp4.faststart.tmp") before renaming
// it over the recording. A crash or power cut during the rewrite leaves it
// behind; retention deletes it once it is stale.
const faststartSuffix = ".faststart.tmp"

// staleTemp is how long a faststart temporary file must have gone
// unmodified before retention deletes it. A rewrite in progress writes to
// its file all the time (1 MiB at a time), so an hour without a write means
// no rewrite owns it, even one in another process sharing the root; the
// ones this process is writing are also known (their recording is active)
// and never touched.
const staleTemp = time.Hour

// applyRetention deletes stale faststart temporary files, then this
// block's finished files that are older than max_age, then the oldest ones
// while together they exceed max_total_size. It runs when Run starts and
// after a file is finished, on that stream's goroutine, and gives up when
// ctx ends. It only ever considers regular files below the root whose names
// the template could have produced (or such a name plus faststartSuffix),
// and never a file being written or rewritten, so an operator's other files
// in the same directory are safe.
func (r *Recorder) applyRetention(ctx context.Context, log *slog.Logger) {
	set := &r.set
	r.retention.Lock()
	defer r.retention.Unlock()
	if ctx.Err() != nil {
		return
	}
	root := set.tmpl.root
	rt, err := os.OpenRoot(root)
	if errors.Is(err, fs.ErrNotExist) {
		return // nothing recorded yet
	}
	if err != nil {
		log.Warn("retention: cannot open the recording root", "root", root, "err", err)
		return
	}
	defer rt.Close()
	var files, temps []retainedFile
	var total int64
	_ = fs.WalkDir(rt.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if ctx.Err() != nil {
			return fs.SkipAll
		}
		if err != nil || d.IsDir() || !d.Type().IsRegular() {
			return nil
		}
		temp := false
		name := p
		if strings.HasSuffix(p, faststartSuffix) {
			temp, name = true, strings.TrimSuffix(p, faststartSuffix)
		}
		if !set.tmpl.matches(name) || r.isActive(filepath.Join(root, filepath.FromSlash(name))) {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		f := retainedFile{rel: p, size: info.Size(), mod: info.ModTime()}
		if temp {
			temps = append(temps, f)
			return nil
		}
		files = append(files, f)
		total += info.Size()
		return nil
	})
	if ctx.Err() != nil {
		return
	}
	now := time.Now()
	for _, f := range temps {
		age := now.Sub(f.mod)
		if age <= staleTemp {
			continue
		}
		if err := rt.Remove(filepath.FromSlash(f.rel)); err != nil {
			log.Warn("retention: cannot delete a stale faststart temporary file", "file", filepath.Join(root, f.rel), "err", err)
			continue
		}
		r.temps.Inc()
		log.Info("stale faststart temporary file deleted", "file", filepath.Join(root, f.rel), "bytes", f.size, "age", age.Round(time.Second))
		r.removeEmptyDirs(rt, path.Dir(f.rel))
	}
	if set.maxAge <= 0 && set.maxTotal <= 0 {
		return
	}
	sort.Slice(files, func(i, j int) bool { return files[i].mod.Before(files[j].mod) })
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
