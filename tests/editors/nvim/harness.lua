-- The driver side: a child Neovim (`--embed`) steered through RPC, and waits with a deadline (never
-- timing assertions: a wait only bounds how long a condition may take to become true).
local H = {}
local Child = {}
Child.__index = Child

local here = vim.fs.dirname(vim.fn.fnamemodify(debug.getinfo(1, 'S').source:sub(2), ':p'))

--- A child Neovim with the plugin on its runtimepath and `T` helpers, in `cwd`.
function H.spawn(cwd)
  local cmd = { vim.v.progpath, '--embed', '--headless', '--clean', '-n', '-u', here .. '/init.lua' }
  local chan = vim.fn.jobstart(cmd, { rpc = true, cwd = cwd })
  assert(chan > 0, 'could not start ' .. table.concat(cmd, ' '))
  local child = setmetatable({ chan = chan }, Child)
  H.children = H.children or {}
  table.insert(H.children, child)
  return child
end

--- Run `code` (a chunk; `...` are its arguments) in the child and return its value.
function Child:lua(code, ...)
  return vim.rpcrequest(self.chan, 'nvim_exec_lua', code, { ... })
end

function Child:cmd(command)
  return vim.rpcrequest(self.chan, 'nvim_command', command)
end

--- Queue keys as if typed (`<Tab>`, `<M-Right>`, ...).
function Child:input(keys)
  return vim.rpcrequest(self.chan, 'nvim_input', keys)
end

--- Wait until `code` (a chunk returning a value) returns a truthy value; fail after `seconds`.
function Child:wait(what, code, seconds, ...)
  local args, last = { ... }, nil
  local ok = vim.wait((seconds or 20) * 1000, function()
    last = self:lua(code, unpack(args))
    return last ~= nil and last ~= false and last ~= vim.NIL
  end, 25)
  if not ok then
    error(('timed out after %ss waiting for %s; the child had: lines=%s ghost=%s mode=%s status=%s notes=%s errors=%s')
      :format(seconds or 20, what, vim.inspect(self:lua('return T.lines()')), vim.inspect(self:lua('return T.ghost()')),
        self:lua('return T.mode()'), vim.inspect(self:lua('return T.status()')), vim.inspect(self:lua('return T.notes')),
        vim.inspect(self:lua('return T.errors()'))), 2)
  end
  return last
end

function Child:stop()
  pcall(vim.rpcnotify, self.chan, 'nvim_command', 'qa!')
  if vim.fn.jobwait({ self.chan }, 10000)[1] == -1 then
    vim.fn.jobstop(self.chan)
  end
end

function H.stop_all()
  for _, child in ipairs(H.children or {}) do
    child:stop()
  end
end

function H.eq(expected, actual, what)
  if not vim.deep_equal(expected, actual) then
    error(('%s: expected %s, got %s'):format(what or 'value', vim.inspect(expected), vim.inspect(actual)), 2)
  end
end

--- The child must not have shown an error trace.
function H.no_errors(child)
  H.eq({}, child:lua('return T.errors()'), 'errors in the child')
end

return H
