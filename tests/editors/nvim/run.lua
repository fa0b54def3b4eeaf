-- nvim --headless --clean -l run.lua CASE [RENDERER]: runs one case of cases.lua, exits 0 when it passes.
local here = vim.fs.dirname(vim.fn.fnamemodify(debug.getinfo(1, 'S').source:sub(2), ':p'))
local H = dofile(here .. '/harness.lua')
local cases = dofile(here .. '/cases.lua')
local name = arg[1]
local case = cases[name]
if not case then
  io.stderr:write(('unknown case %q\n'):format(tostring(name)))
  os.exit(2)
end
local ok, err = xpcall(case, debug.traceback, H, arg[2])
H.stop_all()
if not ok then
  io.stderr:write(tostring(err) .. '\n')
  os.exit(1)
end
io.stdout:write('passed ' .. name .. '\n')
os.exit(0)
